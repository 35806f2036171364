package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"relay/pkg/chat"
	"relay/pkg/protocol"
	"relay/pkg/telemetry"
)

// metrics are the gateway's Prometheus series. Label values come from
// fixed sets (known events, error codes), never from client input.
type metrics struct {
	connections   prometheus.Gauge
	framesIn      *prometheus.CounterVec
	framesOut     *prometheus.CounterVec
	errors        *prometheus.CounterVec
	slowConsumers prometheus.Counter
	sendAck       prometheus.Histogram
	fanout        prometheus.Histogram
	rooms         prometheus.GaugeFunc
	breakerOpen   prometheus.Counter
	// breakerState is 1 for the produce breaker's current state.
	breakerState *prometheus.GaugeVec
	// gaps counts live publications that did not follow a room's last
	// fanned-out seq; repaired counts the events a repair fanned out;
	// repairDropped the live publications dropped by a full repair hold;
	// resyncs the resync_required pushes, by reason.
	gaps          prometheus.Counter
	repaired      prometheus.Counter
	repairDropped prometheus.Counter
	resyncs       *prometheus.CounterVec
	// inflight is the number of client frames being handled.
	inflight prometheus.GaugeFunc
	// presenceEvents counts presence_update events by outcome.
	presenceEvents    *prometheus.CounterVec
	heartbeatsDropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, subscribedRooms, inflight func() float64) *metrics {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_connections", Help: "Open WebSocket connections.",
		}),
		framesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_frames_in_total", Help: "Client frames received, by event (unknown/invalid for the rest).",
		}, []string{"event"}),
		framesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_frames_out_total", Help: "Frames queued to clients, by event.",
		}, []string{"event"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_errors_total", Help: "Error frames sent to clients, by code.",
		}, []string{"code"}),
		slowConsumers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_slow_consumer_disconnects_total", Help: "Connections closed because they could not keep up (4000).",
		}),
		sendAck: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gateway_send_ack_seconds", Help: "From a send_message frame to its ack (Kafka stored it).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		fanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gateway_fanout_seconds", Help: "Time to queue one publication to every local member of its room.",
			Buckets: []float64{.00001, .00005, .0001, .0005, .001, .005, .01, .05, .1},
		}),
		rooms: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_rooms", Help: "Rooms with local members (subscribed room channels).",
		}, subscribedRooms),
		breakerOpen: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_produce_breaker_open_total", Help: "Times the Kafka produce breaker opened.",
		}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_breaker_state", Help: "1 for the current state (closed, half-open, open) of each breaker, 0 for the others.",
		}, []string{"breaker", "state"}),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_gaps_detected_total", Help: "Live publications whose prevSeq did not follow the room's last fanned-out seq (a gap repair started).",
		}),
		repaired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_events_repaired_total", Help: "Events fanned out by gap repairs (read from Redis history or PostgreSQL).",
		}),
		repairDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_repair_dropped_total", Help: "Live publications dropped because a room's repair hold (REPAIR_HOLD) was full.",
		}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_resyncs_total", Help: "resync_required pushes sent, by reason.",
		}, []string{"reason"}),
		inflight: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_frames_in_flight", Help: "Client frames being handled (shutdown waits for them).",
		}, inflight),
		presenceEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_presence_events_total",
			Help: "presence_update events received, by outcome: delivered, no_recipients, dropped (routing queue full), error (room lookup failed), invalid.",
		}, []string{"result"}),
		heartbeatsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_presence_heartbeats_dropped_total", Help: "Heartbeat commands not sent (presence publisher queue full or closed).",
		}),
	}
	reg.MustRegister(m.connections, m.framesIn, m.framesOut, m.errors, m.slowConsumers, m.sendAck, m.fanout, m.rooms, m.breakerOpen,
		m.presenceEvents, m.heartbeatsDropped, m.breakerState, m.gaps, m.repaired, m.repairDropped, m.resyncs, m.inflight)
	for _, r := range []string{protocol.ResyncHistoryTrimmed, protocol.ResyncPersisterBehind, protocol.ResyncReplayLimit,
		protocol.ResyncUnavailable, protocol.ResyncOverflow} {
		m.resyncs.WithLabelValues(r)
	}
	for _, r := range []string{"delivered", "no_recipients", "dropped", "error", "invalid"} {
		m.presenceEvents.WithLabelValues(r)
	}
	// Pre-create the series so dashboards see zeros rather than gaps.
	for _, e := range clientEvents {
		m.framesIn.WithLabelValues(e)
	}
	for _, c := range []chat.Code{chat.CodeBadRequest, chat.CodeUnknownEvent, chat.CodeTooLarge, chat.CodeUnauthorized,
		chat.CodeForbidden, chat.CodeNotFound, chat.CodeConflict, chat.CodeRateLimited, chat.CodeServerFull,
		chat.CodeUnavailable, chat.CodeInternal} {
		m.errors.WithLabelValues(string(c))
	}
	return m
}

// setBreaker sets the breaker state gauge of breaker to state.
func (m *metrics) setBreaker(breaker string, state gobreaker.State) {
	telemetry.SetBreakerState(m.breakerState, state, breaker)
}

// clientEvents are the events a client may send.
var clientEvents = []string{
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

// frameEvent returns the event name of a rendered server frame for metric
// labels. Frames are rendered with "event" first, so a prefix scan avoids
// decoding; anything else is "other".
func frameEvent(frame []byte) string {
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
