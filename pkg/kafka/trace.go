package kafka

import (
	"context"
	"strconv"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Spans follow the OpenTelemetry messaging conventions for Kafka: the
// name is "<operation> <topic>", the kind PRODUCER for a send and CONSUMER
// for processing, and the messaging.* attributes say where the record is.
// The producer's tracer is the global provider's, which telemetry.Setup
// installs (as for the other instrumentation libraries); consumers pass
// their own.
const scope = "relay/pkg/kafka"

func tracer() trace.Tracer { return otel.Tracer(scope) }

// sendAttrs are a producer span's attributes before the broker answered.
func sendAttrs(topic string, key []byte, bodySize int, messageID string) []attribute.KeyValue {
	kv := []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationName("send"), semconv.MessagingOperationTypeSend,
		semconv.MessagingDestinationName(topic),
		semconv.MessagingKafkaMessageKey(string(key)),
		semconv.MessagingMessageBodySize(bodySize),
	}
	if messageID != "" {
		// The chat message's id: what an operator searches a trace by.
		kv = append(kv, semconv.MessagingMessageID(messageID))
	}
	return kv
}

// startSend starts the producer span of one record as a child of ctx and
// puts its context in the record's headers, so consumers continue it.
func startSend(ctx context.Context, prop propagation.TextMapPropagator, msg *sarama.ProducerMessage, key []byte, bodySize int, messageID string) trace.Span {
	ctx, span := tracer().Start(ctx, "send "+msg.Topic, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(sendAttrs(msg.Topic, key, bodySize, messageID)...))
	prop.Inject(ctx, HeaderCarrier{Headers: &msg.Headers})
	return span
}

// endSend ends a producer span with where the record went, or the error.
func endSend(span trace.Span, partition int32, offset int64, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	} else {
		span.SetAttributes(semconv.MessagingDestinationPartitionID(strconv.FormatInt(int64(partition), 10)),
			semconv.MessagingKafkaOffset(int(offset)))
	}
	span.End()
}

// RecordContext returns ctx carrying the trace context of the producer
// span in msg's headers (ctx itself when there is none).
func RecordContext(ctx context.Context, prop propagation.TextMapPropagator, msg *sarama.ConsumerMessage) context.Context {
	headers := ConsumerHeaders(msg.Headers)
	return prop.Extract(ctx, HeaderCarrier{Headers: &headers})
}

// StartProcess starts the span of a consumer group processing msg: a child
// of the record's producer span, so one message is one trace from the
// sender to every consumer. operation is "process" for handling the record
// itself; a consumer that finishes the record later under another name
// (e.g. "persist" once its row is committed) passes that.
func StartProcess(ctx context.Context, tr trace.Tracer, prop propagation.TextMapPropagator, msg *sarama.ConsumerMessage, group, operation string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	opts = append([]trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(ProcessAttrs(msg, group, operation)...),
	}, opts...)
	return tr.Start(RecordContext(ctx, prop, msg), operation+" "+msg.Topic, opts...)
}

// ProcessAttrs are the messaging attributes of processing msg.
func ProcessAttrs(msg *sarama.ConsumerMessage, group, operation string) []attribute.KeyValue {
	return []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationName(operation), semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(msg.Topic),
		semconv.MessagingDestinationPartitionID(strconv.FormatInt(int64(msg.Partition), 10)),
		semconv.MessagingKafkaOffset(int(msg.Offset)),
		semconv.MessagingKafkaMessageKey(string(msg.Key)),
		semconv.MessagingConsumerGroupName(group),
		semconv.MessagingMessageBodySize(len(msg.Value)),
	}
}

// BatchAttrs are the messaging attributes of processing n records of
// topic at once (the span links to each record's trace).
func BatchAttrs(topic, group string, n int) []attribute.KeyValue {
	return []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationName("process"), semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(topic),
		semconv.MessagingConsumerGroupName(group),
		semconv.MessagingBatchMessageCount(n),
	}
}
