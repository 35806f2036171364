// Package metrics declares the gateway's Prometheus series, shared by its
// packages so each series is registered once.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"relay/pkg/chat"
	"relay/pkg/protocol"
	"relay/pkg/telemetry"
)

// Metrics are the gateway's Prometheus series. Label values come from
// fixed sets (known events, error codes), never from client input.
type Metrics struct {
	// Connections is the open connections by protocol (native, socketio);
	// MaxConnections the instance's limit (MAX_CONNECTIONS).
	Connections    *prometheus.GaugeVec
	MaxConnections prometheus.Gauge
	// PubSub is the Redis publish -> receive latency of live publications;
	// Delivery the event's time -> frame written to a socket, per recipient.
	PubSub   prometheus.Histogram
	Delivery prometheus.Histogram
	// Sends and Joins count send_message and join_room answers by outcome
	// (ok, error) and error code ("" when ok); Deliveries the room frames
	// written to sockets or dropped with their connection.
	Sends      *prometheus.CounterVec
	Joins      *prometheus.CounterVec
	Deliveries *prometheus.CounterVec
	// FramesIn counts client frames by event; FramesOut frames queued to
	// clients by event; Errors error frames by code.
	FramesIn  *prometheus.CounterVec
	FramesOut *prometheus.CounterVec
	Errors    *prometheus.CounterVec
	// SlowConsumers counts the 4000 closes (also in Disconnects).
	SlowConsumers prometheus.Counter
	// Disconnects counts the connections the server closed, by reason.
	Disconnects *prometheus.CounterVec
	// SendAck is the send_message → ack latency; Fanout the time to queue
	// one publication to a room's local members.
	SendAck prometheus.Histogram
	Fanout  prometheus.Histogram
	// Rooms is the rooms with local members.
	Rooms prometheus.GaugeFunc
	// BreakerOpen counts the openings of the produce breaker.
	BreakerOpen prometheus.Counter
	// BreakerState is 1 for the produce breaker's current state.
	BreakerState *prometheus.GaugeVec
	// Gaps counts live publications that did not follow a room's last
	// fanned-out seq; Repaired counts the events a repair fanned out;
	// RepairDropped the live publications dropped by a full repair hold;
	// Resyncs the resync_required pushes, by reason.
	Gaps          prometheus.Counter
	Repaired      prometheus.Counter
	RepairDropped prometheus.Counter
	Resyncs       *prometheus.CounterVec
	// Inflight is the number of client frames being handled.
	Inflight prometheus.GaugeFunc
	// PresenceEvents counts presence_update events by outcome.
	PresenceEvents    *prometheus.CounterVec
	HeartbeatsDropped prometheus.Counter
}

// New registers the series on reg; subscribedRooms and inflight feed the
// two gauges that are read on scrape.
func New(reg prometheus.Registerer, subscribedRooms, inflight func() float64) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_connections", Help: "Open connections, by protocol (native, socketio).",
		}, []string{"protocol"}),
		MaxConnections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_max_connections", Help: "The instance's connection limit (MAX_CONNECTIONS).",
		}),
		PubSub: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gateway_pubsub_latency_seconds", Help: "From the delivery worker's Redis publish to this gateway receiving it (live publications).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}),
		Delivery: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gateway_delivery_latency_seconds", Help: "From the event's time (the gateway producing it) to its frame written to a recipient's socket.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		Sends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_sends_total", Help: "send_message frames answered, by outcome (ok, error) and error code.",
		}, []string{"outcome", "code"}),
		Joins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_joins_total", Help: "join_room frames answered, by outcome (ok, error) and error code.",
		}, []string{"outcome", "code"}),
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_deliveries_total", Help: "Live room frames written to sockets (written) or lost with their closed connection (dropped).",
		}, []string{"outcome"}),
		FramesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_frames_in_total", Help: "Client frames received, by event (unknown/invalid for the rest).",
		}, []string{"event"}),
		FramesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_frames_out_total", Help: "Frames queued to clients, by event.",
		}, []string{"event"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_errors_total", Help: "Error frames sent to clients, by code.",
		}, []string{"code"}),
		SlowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_slow_consumer_disconnects_total", Help: "Connections closed because they could not keep up (4000).",
		}),
		Disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_disconnects_total", Help: "Connections ended by the server or lost, by reason (slow consumer, token expired, server restarting, ...).",
		}, []string{"reason"}),
		SendAck: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gateway_send_ack_seconds", Help: "From a send_message frame to its ack (Kafka stored it).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		Fanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gateway_fanout_seconds", Help: "Time to queue one publication to every local member of its room.",
			Buckets: []float64{.00001, .00005, .0001, .0005, .001, .005, .01, .05, .1},
		}),
		Rooms: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_rooms", Help: "Rooms with local members (subscribed room channels).",
		}, subscribedRooms),
		BreakerOpen: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_produce_breaker_open_total", Help: "Times the Kafka produce breaker opened.",
		}),
		BreakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_breaker_state", Help: "1 for the current state (closed, half-open, open) of each breaker, 0 for the others.",
		}, []string{"breaker", "state"}),
		Gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_gaps_detected_total", Help: "Live publications whose prevSeq did not follow the room's last fanned-out seq (a gap repair started).",
		}),
		Repaired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_events_repaired_total", Help: "Events fanned out by gap repairs (read from Redis history or PostgreSQL).",
		}),
		RepairDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_repair_dropped_total", Help: "Live publications dropped because a room's repair hold (REPAIR_HOLD) was full.",
		}),
		Resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_resyncs_total", Help: "resync_required pushes sent, by reason.",
		}, []string{"reason"}),
		Inflight: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_frames_in_flight", Help: "Client frames being handled (shutdown waits for them).",
		}, inflight),
		PresenceEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_presence_events_total",
			Help: "presence_update events received, by outcome: delivered, no_recipients, dropped (routing queue full), error (room lookup failed), invalid.",
		}, []string{"result"}),
		HeartbeatsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_presence_heartbeats_dropped_total", Help: "Heartbeat commands not sent (presence publisher queue full or closed).",
		}),
	}
	reg.MustRegister(m.Connections, m.MaxConnections, m.PubSub, m.Delivery, m.Sends, m.Joins, m.Deliveries, m.FramesIn, m.FramesOut, m.Errors, m.SlowConsumers, m.Disconnects, m.SendAck, m.Fanout, m.Rooms, m.BreakerOpen,
		m.PresenceEvents, m.HeartbeatsDropped, m.BreakerState, m.Gaps, m.Repaired, m.RepairDropped, m.Resyncs, m.Inflight)
	for _, r := range []string{protocol.ResyncHistoryTrimmed, protocol.ResyncPersisterBehind, protocol.ResyncReplayLimit,
		protocol.ResyncUnavailable, protocol.ResyncOverflow} {
		m.Resyncs.WithLabelValues(r)
	}
	for _, r := range []string{"delivered", "no_recipients", "dropped", "error", "invalid"} {
		m.PresenceEvents.WithLabelValues(r)
	}
	// Pre-create the series so dashboards see zeros rather than gaps.
	for _, e := range ClientEvents {
		m.FramesIn.WithLabelValues(e)
	}
	for _, c := range []chat.Code{chat.CodeBadRequest, chat.CodeUnknownEvent, chat.CodeTooLarge, chat.CodeUnauthorized,
		chat.CodeForbidden, chat.CodeNotFound, chat.CodeConflict, chat.CodeRateLimited, chat.CodeServerFull,
		chat.CodeUnavailable, chat.CodeInternal} {
		m.Errors.WithLabelValues(string(c))
		m.Sends.WithLabelValues("error", string(c))
		m.Joins.WithLabelValues("error", string(c))
	}
	m.Sends.WithLabelValues("ok", "")
	m.Joins.WithLabelValues("ok", "")
	for _, p := range []string{"native", "socketio"} {
		m.Connections.WithLabelValues(p)
	}
	for _, o := range []string{"written", "dropped"} {
		m.Deliveries.WithLabelValues(o)
	}
	return m
}

// SetBreaker sets the breaker state gauge of breaker to state.
func (m *Metrics) SetBreaker(breaker string, state gobreaker.State) {
	telemetry.SetBreakerState(m.BreakerState, state, breaker)
}

// ClientEvents are the events a client may send.
var ClientEvents = []string{
	protocol.EventJoinRoom, protocol.EventLeaveRoom, protocol.EventSendMessage, protocol.EventEditMessage,
	protocol.EventDeleteMessage, protocol.EventMarkRead, protocol.EventTypingStart, protocol.EventTypingStop,
	protocol.EventPing,
}

// serverEvents are the events the gateway forwards or sends.
var serverEvents = func() map[string]string {
	m := map[string]string{}
	for _, e := range []string{protocol.EventAck, protocol.EventError, protocol.EventMessage,
		protocol.EventMessageEdited, protocol.EventMessageDeleted, protocol.EventMessageRead,
		protocol.EventUserJoined, protocol.EventUserLeft, protocol.EventTyping,
		protocol.EventPresenceUpdate, protocol.EventResyncRequired} {
		m[e] = e
	}
	return m
}()

// FrameEvent returns the event name of a rendered server frame for metric
// labels. Frames are rendered with "event" first, so a prefix scan avoids
// decoding; anything else is "other".
func FrameEvent(frame []byte) string {
	const prefix = `{"event":"`
	if len(frame) > len(prefix) && string(frame[:len(prefix)]) == prefix {
		rest := frame[len(prefix):]
		for i := 0; i < len(rest) && i < 32; i++ {
			if rest[i] == '"' {
				// A lookup with a converted key does not allocate; the
				// stored name is returned rather than a new string.
				if name, ok := serverEvents[string(rest[:i])]; ok {
					return name
				}
				break
			}
		}
	}
	return "other"
}

// IsServerEvent reports whether the gateway forwards or sends event.
func IsServerEvent(event string) bool {
	_, ok := serverEvents[event]
	return ok
}

// Answered counts a send_message or join_room answer on v: ok when err is
// nil, else error with the error's code.
func Answered(v *prometheus.CounterVec, err error) {
	if err == nil {
		v.WithLabelValues("ok", "").Inc()
		return
	}
	v.WithLabelValues("error", string(chat.ErrorCode(err))).Inc()
}
