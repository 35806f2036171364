package conn

import (
	"github.com/fasthttp/websocket"

	"relay/pkg/protocol"
)

// Disconnect is why the server ends a connection: the close code and
// reason the client gets, and whether it should reconnect. Every close of
// a connection goes through one, and is counted by reason
// (gateway_disconnects_total).
type Disconnect struct {
	// Code is the WebSocket close code; zero closes without a close frame
	// (the peer is gone or does not answer).
	Code int
	// Reason is the close frame's reason text; "" sends none.
	Reason string
	// Reconnect tells whether the client should reconnect (after a backoff,
	// and with a fresh token for DisconnectAuthExpired).
	Reconnect bool
	// label names the disconnect in the metric (a fixed set).
	label string
}

// Label is the disconnect's name in the disconnects metric.
func (d Disconnect) Label() string { return d.label }

// The disconnects of the gateway; docs/protocol.md lists the close codes.
var (
	// DisconnectLost: the peer left or broke the connection, or a write
	// failed; there is nobody to send a close frame to.
	DisconnectLost = Disconnect{Reconnect: true, label: "connection lost"}
	// DisconnectPongTimeout: the peer was silent (no frame, no pong) past
	// WS_PONG_TIMEOUT.
	DisconnectPongTimeout = Disconnect{Reconnect: true, label: "pong timeout"}
	// DisconnectSlow: the client did not read fast enough; its queue
	// overflowed or a write missed its deadline.
	DisconnectSlow = Disconnect{Code: protocol.CloseSlowConsumer, Reason: "slow consumer", Reconnect: true, label: "slow consumer"}
	// DisconnectAuthExpired: the token expired during the session.
	DisconnectAuthExpired = Disconnect{Code: protocol.CloseAuthExpired, Reason: "token expired", Reconnect: true, label: "token expired"}
	// DisconnectRestart: the instance shuts down; reconnect elsewhere.
	DisconnectRestart = Disconnect{Code: protocol.CloseServiceRestart, Reason: "server restarting", Reconnect: true, label: "server restarting"}
	// DisconnectFull: MAX_CONNECTIONS reached.
	DisconnectFull = Disconnect{Code: protocol.CloseTryAgainLater, Reason: "server full", Reconnect: true, label: "server full"}
	// DisconnectInternal: a bug of ours ended the connection.
	DisconnectInternal = Disconnect{Code: websocket.CloseInternalServerErr, Reason: "internal error", Reconnect: true, label: "internal error"}
	// DisconnectProtocol: the client broke RFC 6455.
	DisconnectProtocol = Disconnect{Code: websocket.CloseProtocolError, label: "protocol error"}
	// DisconnectTooBig: a message above WS_READ_LIMIT.
	DisconnectTooBig = Disconnect{Code: websocket.CloseMessageTooBig, label: "message too big"}
)

// disconnects are all of them, for the metric's initial zeros.
var disconnects = []Disconnect{DisconnectLost, DisconnectPongTimeout, DisconnectSlow, DisconnectAuthExpired,
	DisconnectRestart, DisconnectFull, DisconnectInternal, DisconnectProtocol, DisconnectTooBig}
