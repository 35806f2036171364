package adapters

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/sony/gobreaker/v2"

	"relay/pkg/chat"
	"relay/pkg/events"
	"relay/pkg/kafka"
	"relay/services/gateway/internal/metrics"
)

// Publisher is the Kafka side the gateway needs; *kafka.Producer is it.
type Publisher interface {
	Publish(ctx context.Context, e *events.Event) (partition int32, seq int64, err error)
	Close() error
}

var _ Publisher = (*kafka.Producer)(nil)

// ProducerOptions configure NewProducer; every field is required.
type ProducerOptions struct {
	// SendTimeout bounds one produce.
	SendTimeout time.Duration
	// BreakerFailures consecutive failures open the breaker, which refuses
	// for BreakerOpenTimeout before one trial send.
	BreakerFailures    uint32
	BreakerOpenTimeout time.Duration
	// Metrics gets the breaker's state; Log its changes.
	Metrics *metrics.Metrics
	Log     *slog.Logger
}

// Producer appends room events to the log (Kafka) through a circuit
// breaker.
type Producer struct {
	pub     Publisher
	o       ProducerOptions
	breaker *gobreaker.CircuitBreaker[int64]
}

// NewProducer wraps pub in the breaker.
func NewProducer(pub Publisher, o ProducerOptions) *Producer {
	p := &Producer{pub: pub, o: o}
	p.breaker = gobreaker.NewCircuitBreaker[int64](gobreaker.Settings{
		Name:        "kafka-produce",
		MaxRequests: 1,
		Timeout:     o.BreakerOpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= o.BreakerFailures },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			o.Log.Warn("produce breaker changed state", "breaker", "kafka-produce", "from", from.String(), "to", to.String())
			if to == gobreaker.StateOpen {
				o.Metrics.BreakerOpen.Inc()
			}
			o.Metrics.SetBreaker("kafka-produce", to)
		},
	})
	o.Metrics.SetBreaker("kafka-produce", gobreaker.StateClosed)
	return p
}

// Produce appends e to the room log through the breaker and returns its
// seq. Kafka down, slow past SendTimeout, or the breaker open is UNAVAILABLE:
// nothing is acked that Kafka has not stored.
func (p *Producer) Produce(ctx context.Context, e *events.Event) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, p.o.SendTimeout)
	defer cancel()
	seq, err := p.breaker.Execute(func() (int64, error) {
		_, seq, err := p.pub.Publish(ctx, e)
		return seq, err
	})
	switch {
	case err == nil:
		return seq, nil
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		return 0, chat.Wrap(chat.CodeUnavailable, err, "message log unavailable; retry later")
	default:
		return 0, chat.Wrap(chat.CodeUnavailable, err, "could not store the event; retry")
	}
}

// Open reports whether the breaker is open (sends are refused).
func (p *Producer) Open() bool { return p.breaker.State() == gobreaker.StateOpen }

// Replace swaps the Kafka side and returns the one it replaces. Tests that
// fail Kafka on purpose call it before any connection exists, so no reader
// sees the change.
func (p *Producer) Replace(pub Publisher) Publisher {
	old := p.pub
	p.pub = pub
	return old
}

// Close flushes and closes the Kafka producer.
func (p *Producer) Close() error { return p.pub.Close() }
