package server

// Environment variables of the gateway (besides the shared ones of
// pkg/config: DATABASE_URL, DATABASE_MAX_CONNS, REDIS_URL, REDIS_PREFIX,
// KAFKA_BROKERS, KAFKA_TOPIC, KAFKA_PARTITIONS, OTEL_EXPORTER_OTLP_*,
// LOG_LEVEL, LOG_FORMAT, HTTP_ADDR, SHUTDOWN_TIMEOUT, JWT_SECRET, JWT_TTL):
//
//	HTTP_ADDR              listen address                         127.0.0.1:8090
//	API_URL                the api, for channel joins              http://127.0.0.1:8080
//	API_TIMEOUT            bound on one api call                   5s
//	SEND_TIMEOUT           bound on one Kafka produce               5s
//	MAX_CONNECTIONS        WebSocket connections per instance       20000
//	MAX_CONNECTIONS_PER_USER  connections of one user per instance,
//	                       both protocols (429 at the upgrade, or a
//	                       Socket.IO CONNECT_ERROR RATE_LIMITED)    20
//	MAX_CONNECTIONS_PER_IP connections and Socket.IO sessions of one
//	                       client address per instance (429)        500
//	TRUSTED_PROXIES        IPs/CIDRs whose X-Forwarded-For names the
//	                       client (per-IP caps, logs)    127.0.0.1/8,::1/128
//	CORS_ALLOWED_ORIGINS   browser origins besides the gateway's own
//	                       that may open /ws and /socket.io/ (403 else) none
//	RATE_SENDS_PER_SEC     send_message, edit_message, delete_message
//	                       per second per user, all connections on all
//	                       gateways together (Redis)                20
//	RATE_SENDS_BURST       burst of those                           50
//	RATE_JOINS_PER_SEC     join_room per second per user, likewise  20
//	RATE_JOINS_BURST       burst of those (a reconnect rejoins every
//	                       room of every tab)                       200
//	WS_MAX_FRAME_BYTES     largest client frame handled (TOO_LARGE above)   16384
//	WS_READ_LIMIT          messages above it (fragments joined) close the
//	                       socket with 1009, from the frame header  WS_MAX_FRAME_BYTES
//	WS_QUEUE_SIZE          frames queued per connection before it is
//	                       closed as a slow consumer (4000)        256
//	WS_OUTBOUND_BUDGET_BYTES  bytes queued to one connection, replays
//	                       included, before it is closed as a slow
//	                       consumer (4000)                         8388608
//	WS_WRITE_TIMEOUT       deadline of one socket write             10s
//	WS_PING_INTERVAL       server ping period                       10s
//	WS_PONG_TIMEOUT        silence (no frame, no pong) after which
//	                       the connection is dropped (and its user's
//	                       presence ends); keep it <= PRESENCE_TIMEOUT 30s
//	WS_RATE                client frames per second per connection  20
//	WS_BURST               burst of client frames per connection    50
//	WS_REPLAY_RATE         join replays (join_room with lastSeq that has
//	                       events to replay) per second per connection 2
//	WS_REPLAY_BURST        burst of those replays per connection    50
//	WS_MAX_ROOMS           rooms joined at once per connection      500
//	WS_READ_BUFFER         read buffer bytes of a connection read by a
//	                       goroutine of its own (no epoll); with epoll,
//	                       reads use pooled 4 KiB buffers          512
//	WS_WRITE_BUFFER        pooled socket write buffer bytes         4096
//	MEMBERSHIP_CACHE_TTL   how long a positive membership check is cached   30s
//	MEMBERSHIP_CACHE_SIZE  entries of that cache                    100000
//	DEDUPE_TTL             how long a clientMsgId's ack is kept (shared
//	                       with delivery: config.Dedupe)            24h
//	DEDUPE_PENDING_TTL     lifetime of the "send in progress" marker 10s
//	AUTHOR_TTL             how long a message's author is kept in Redis 1h
//	REPLAY_LIMIT           most events replayed on join_room with lastSeq,
//	                       or read by one gap repair; beyond it the client
//	                       gets resync_required (replay_limit)     1000
//	REPAIR_HOLD            live publications of a room held while a gap in
//	                       it is repaired; beyond it they are dropped and
//	                       the room's connections get resync_required 1024
//	REPAIR_WAIT            how long a repair keeps retrying while PostgreSQL
//	                       has not caught up (persister_behind)    2s
//	RESYNC_RETRY_AFTER     retryAfterMs of a resync_required that a retry
//	                       can cure (persister_behind, unavailable) 1s
//	BREAKER_FAILURES       consecutive produce failures that open the breaker 5
//	BREAKER_OPEN_TIMEOUT   how long the open breaker refuses before a trial 2s
//	INSTANCE_ID            this instance's id towards the presence service
//	                       (unique among live gateways, at most 100 bytes) <hostname>-<random>
//	PRESENCE_HEARTBEAT_INTERVAL, PRESENCE_TIMEOUT, TYPING_TTL  shared with
//	                       presence (config.Presence): how often the heartbeat
//	                       batch of all live connections is sent (15s); the
//	                       silence timeout, only checked here against the
//	                       interval (30s); the typing lifetime, used here only
//	                       to skip stops of typing that already expired (5s)
//	PRESENCE_CACHE_TTL     how long a user's rooms and a room's members are
//	                       cached for routing presence_update        30s
//	PRESENCE_CACHE_SIZE    entries of each of those two caches      10000
//	PRESENCE_QUEUE_SIZE    presence events waiting to be routed before
//	                       new ones are dropped (counted)           1024
//	PRESENCE_MAX_ROOM_MEMBERS  rooms with more members carry no
//	                       presence_update (REST has the state)     1000
//	SOCKETIO_PING_INTERVAL Engine.IO heartbeat period at /socket.io/ 25s
//	SOCKETIO_PING_TIMEOUT  a Socket.IO session whose pong is this late is closed 20s
//	SOCKETIO_MAX_PAYLOAD   largest Socket.IO polling body / WebSocket message 1000000
//	SOCKETIO_CONNECT_TIMEOUT  a Socket.IO session without CONNECT is closed 5s
//	SOCKETIO_MAX_PENDING_PER_IP  Socket.IO sessions without CONNECT per
//	                       client address (429 beyond)              20

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"relay/pkg/config"
	"relay/pkg/web"
	"relay/services/gateway/internal/conn"
)

// Config is the gateway's configuration. New fills every zero value with
// its default, so tests set only what they need.
type Config struct {
	// Postgres is read for membership and authorship checks only.
	Postgres config.Postgres
	// Redis is the pub/sub, history, dedupe and author store.
	Redis config.Redis
	// Kafka is where room events are produced.
	Kafka config.Kafka
	// Telemetry configures logs and traces.
	Telemetry config.Telemetry
	// HTTP is the listener; Addr defaults to 127.0.0.1:8090.
	HTTP config.HTTP
	// JWT verifies the api's tokens.
	JWT config.JWT

	// APIURL is the api's base URL, used to join channels; zero means
	// http://127.0.0.1:8080.
	APIURL string `env:"API_URL" envDefault:"http://127.0.0.1:8080"`
	// APITimeout bounds one api call; zero means 5 s.
	APITimeout time.Duration `env:"API_TIMEOUT" envDefault:"5s"`
	// SendTimeout bounds one Kafka produce; zero means 5 s.
	SendTimeout time.Duration `env:"SEND_TIMEOUT" envDefault:"5s"`
	// MaxConnections caps WebSocket connections; zero means 20000.
	MaxConnections int `env:"MAX_CONNECTIONS" envDefault:"20000"`
	// MaxConnsPerUser caps one user's connections on this instance, both
	// protocols; zero means 20.
	MaxConnsPerUser int `env:"MAX_CONNECTIONS_PER_USER" envDefault:"20"`
	// MaxConnsPerIP caps one client address's connections and Socket.IO
	// sessions on this instance; zero means 500 (a NAT can hide many).
	MaxConnsPerIP int `env:"MAX_CONNECTIONS_PER_IP" envDefault:"500"`
	// TrustedProxies are the proxies whose X-Forwarded-For header names
	// the client (per-IP caps, logs); the api reads the same variable.
	TrustedProxies []string `env:"TRUSTED_PROXIES" envDefault:"127.0.0.1/8,::1/128" envSeparator:","`
	// SendRate and SendBurst limit a user's sends, edits and deletes per
	// second across every gateway; zero means 20 and 50.
	SendRate  int `env:"RATE_SENDS_PER_SEC" envDefault:"20"`
	SendBurst int `env:"RATE_SENDS_BURST" envDefault:"50"`
	// JoinRate and JoinBurst limit a user's join_room per second across
	// every gateway; zero means 20 and 200.
	JoinRate  int `env:"RATE_JOINS_PER_SEC" envDefault:"20"`
	JoinBurst int `env:"RATE_JOINS_BURST" envDefault:"200"`
	// MaxFrameBytes is the largest client frame handled; zero means 16 KiB.
	MaxFrameBytes int `env:"WS_MAX_FRAME_BYTES" envDefault:"16384"`
	// ReadLimit closes the socket (1009) on a message above it, fragments
	// joined, checked from each frame's header; zero means MaxFrameBytes:
	// nothing larger could be handled, so nothing larger is buffered.
	ReadLimit int64 `env:"WS_READ_LIMIT"`
	// QueueSize bounds each connection's outgoing queue; zero means 256.
	QueueSize int `env:"WS_QUEUE_SIZE" envDefault:"256"`
	// OutboundBudget bounds the bytes queued to one connection, replays
	// included (closed with 4000 past it); zero means 8 MiB, enough for a
	// full replay (REPLAY_LIMIT events) of the largest messages.
	OutboundBudget int `env:"WS_OUTBOUND_BUDGET_BYTES" envDefault:"8388608"`
	// WriteTimeout is the deadline of one socket write; zero means 10 s.
	WriteTimeout time.Duration `env:"WS_WRITE_TIMEOUT" envDefault:"10s"`
	// PingInterval is how often the server pings; zero means 10 s.
	PingInterval time.Duration `env:"WS_PING_INTERVAL" envDefault:"10s"`
	// PongTimeout drops a silent connection; zero means 30 s. A pulled
	// cable is noticed (and its user goes offline) within it.
	PongTimeout time.Duration `env:"WS_PONG_TIMEOUT" envDefault:"30s"`
	// Rate is client frames per second per connection; zero means 20.
	Rate float64 `env:"WS_RATE" envDefault:"20"`
	// Burst is the client frame burst per connection; zero means 50.
	Burst int `env:"WS_BURST" envDefault:"50"`
	// ReplayRate is the join replays per second of one connection; zero
	// means 2. Only joins that replay something count.
	ReplayRate float64 `env:"WS_REPLAY_RATE" envDefault:"2"`
	// ReplayBurst is the burst of join replays of one connection (a
	// reconnect rejoining its busy rooms); zero means 50.
	ReplayBurst int `env:"WS_REPLAY_BURST" envDefault:"50"`
	// MaxRooms bounds the rooms joined on one connection; zero means 500.
	MaxRooms int `env:"WS_MAX_ROOMS" envDefault:"500"`
	// ReadBufferSize is the read buffer of a connection read without the
	// poller; zero means 512 bytes.
	ReadBufferSize int `env:"WS_READ_BUFFER" envDefault:"512"`
	// WriteBufferSize is the pooled write buffer; zero means 4 KiB.
	WriteBufferSize int `env:"WS_WRITE_BUFFER" envDefault:"4096"`
	// MembershipTTL is how long a positive membership is cached; zero means 30 s.
	MembershipTTL time.Duration `env:"MEMBERSHIP_CACHE_TTL" envDefault:"30s"`
	// MembershipCacheSize bounds the membership cache; zero means 100000.
	MembershipCacheSize int `env:"MEMBERSHIP_CACHE_SIZE" envDefault:"100000"`
	// Dedupe holds DEDUPE_TTL, shared with the delivery worker; zero
	// means its default.
	config.Dedupe
	// DedupePendingTTL bounds the in-progress marker; zero means 10 s. It
	// only matters when a gateway died before Kafka stored the send (when
	// Kafka stored it, the delivery worker records the ack at once), so it
	// just has to outlast one produce (SEND_TIMEOUT).
	DedupePendingTTL time.Duration `env:"DEDUPE_PENDING_TTL" envDefault:"10s"`
	// AuthorTTL keeps a message's author in Redis; zero means 1 h. The key
	// only has to outlive the persister's lag (PostgreSQL answers after
	// that), and one is written per message: at 1,000 msgs/s a day of them
	// would be ~86 million keys.
	AuthorTTL time.Duration `env:"AUTHOR_TTL" envDefault:"1h"`
	// ReplayLimit bounds a join replay and one gap repair read; zero
	// means 1000.
	ReplayLimit int `env:"REPLAY_LIMIT" envDefault:"1000"`
	// RepairHold bounds the live publications of a room held during a gap
	// repair; zero means 1024.
	RepairHold int `env:"REPAIR_HOLD" envDefault:"1024"`
	// RepairWait is how long a gap repair retries while PostgreSQL has not
	// caught up; zero means 2 s.
	RepairWait time.Duration `env:"REPAIR_WAIT" envDefault:"2s"`
	// ResyncRetryAfter is the retryAfterMs of a resync_required a retry can
	// cure; zero means 1 s.
	ResyncRetryAfter time.Duration `env:"RESYNC_RETRY_AFTER" envDefault:"1s"`
	// BreakerFailures opens the produce breaker; zero means 5.
	BreakerFailures uint32 `env:"BREAKER_FAILURES" envDefault:"5"`
	// BreakerOpenTimeout is how long it stays open before one trial send;
	// zero means 2 s. Short, because senders cannot post at all while it is
	// open: after Kafka returns, sends resume within this bound.
	BreakerOpenTimeout time.Duration `env:"BREAKER_OPEN_TIMEOUT" envDefault:"2s"`

	// InstanceID names this instance in presence commands; "" means the
	// host name plus a random suffix (unique per process).
	InstanceID string `env:"INSTANCE_ID"`
	// Presence holds the heartbeat interval, the presence timeout (only
	// validated against the interval here) and the typing TTL, shared with
	// the presence service; zero fields mean their defaults.
	config.Presence
	// PresenceCacheTTL bounds the staleness of the room data used to route
	// presence_update; zero means 30 s.
	PresenceCacheTTL time.Duration `env:"PRESENCE_CACHE_TTL" envDefault:"30s"`
	// PresenceCacheSize bounds each routing cache; zero means 10000.
	PresenceCacheSize int `env:"PRESENCE_CACHE_SIZE" envDefault:"10000"`
	// PresenceQueueSize bounds the presence events waiting to be routed;
	// zero means 1024.
	PresenceQueueSize int `env:"PRESENCE_QUEUE_SIZE" envDefault:"1024"`
	// PresenceMaxRoomMembers: a room with more members does not route
	// presence_update (each change would go to every member, and the
	// member list would fill the cache); zero means 1000.
	PresenceMaxRoomMembers int `env:"PRESENCE_MAX_ROOM_MEMBERS" envDefault:"1000"`

	// SocketIO configures the Socket.IO endpoint.
	SocketIO SocketIOConfig
}

// withDefaults returns c with every zero value replaced by its default.
func (c Config) withDefaults() Config {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	c.HTTP = c.HTTP.WithDefaults("127.0.0.1:8090")
	c.Postgres = c.Postgres.WithDefaults()
	c.Redis = c.Redis.WithDefaults()
	c.Kafka = c.Kafka.WithDefaults()
	if c.JWT.Secret == "" {
		c.JWT.Secret = config.DevJWTSecret
	}
	def(&c.JWT.TTL, 24*time.Hour)
	if c.Telemetry.LogLevel == "" {
		c.Telemetry.LogLevel = "info"
	}
	if c.APIURL == "" {
		c.APIURL = "http://127.0.0.1:8080"
	}
	def(&c.APITimeout, 5*time.Second)
	def(&c.SendTimeout, 5*time.Second)
	defInt(&c.MaxConnections, 20000)
	defInt(&c.MaxConnsPerUser, 20)
	defInt(&c.MaxConnsPerIP, 500)
	if c.TrustedProxies == nil {
		c.TrustedProxies = []string{"127.0.0.1/8", "::1/128"}
	}
	defInt(&c.SendRate, 20)
	defInt(&c.SendBurst, 50)
	defInt(&c.JoinRate, 20)
	defInt(&c.JoinBurst, 200)
	defInt(&c.SocketIO.MaxPendingPerIP, 20)
	def(&c.SocketIO.ConnectTimeout, 5*time.Second)
	defInt(&c.MaxFrameBytes, 16<<10)
	if c.ReadLimit == 0 {
		c.ReadLimit = int64(c.MaxFrameBytes)
	}
	defInt(&c.QueueSize, 256)
	defInt(&c.OutboundBudget, 8<<20)
	def(&c.WriteTimeout, 10*time.Second)
	def(&c.PingInterval, 10*time.Second)
	def(&c.PongTimeout, 30*time.Second)
	if c.Rate == 0 {
		c.Rate = 20
	}
	defInt(&c.Burst, 50)
	if c.ReplayRate == 0 {
		c.ReplayRate = 2
	}
	defInt(&c.ReplayBurst, 50)
	defInt(&c.MaxRooms, 500)
	defInt(&c.ReadBufferSize, 512)
	defInt(&c.WriteBufferSize, 4096)
	def(&c.MembershipTTL, 30*time.Second)
	defInt(&c.MembershipCacheSize, 100000)
	c.Dedupe = c.Dedupe.WithDefaults()
	def(&c.DedupePendingTTL, 10*time.Second)
	def(&c.AuthorTTL, time.Hour)
	defInt(&c.ReplayLimit, 1000)
	defInt(&c.RepairHold, 1024)
	def(&c.RepairWait, 2*time.Second)
	def(&c.ResyncRetryAfter, time.Second)
	if c.BreakerFailures == 0 {
		c.BreakerFailures = 5
	}
	def(&c.BreakerOpenTimeout, 2*time.Second)
	c.Presence = c.Presence.WithDefaults()
	def(&c.PresenceCacheTTL, 30*time.Second)
	defInt(&c.PresenceCacheSize, 10000)
	defInt(&c.PresenceMaxRoomMembers, 1000)
	defInt(&c.PresenceQueueSize, 1024)
	return c
}

// maxInstanceIDLen leaves room under presence.MaxIDLen.
const maxInstanceIDLen = 100

// Validate checks a configuration after defaults were applied.
func (c Config) Validate() error {
	if err := c.JWT.Validate(); err != nil {
		return err
	}
	u, err := url.Parse(c.APIURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("API_URL %q must be an http(s) URL", c.APIURL)
	}
	var errs []error
	positive := map[string]float64{
		"MAX_CONNECTIONS": float64(c.MaxConnections), "WS_MAX_FRAME_BYTES": float64(c.MaxFrameBytes),
		"WS_QUEUE_SIZE": float64(c.QueueSize), "WS_RATE": c.Rate, "WS_BURST": float64(c.Burst),
		"WS_REPLAY_RATE": c.ReplayRate, "WS_REPLAY_BURST": float64(c.ReplayBurst),
		"WS_MAX_ROOMS": float64(c.MaxRooms), "MEMBERSHIP_CACHE_SIZE": float64(c.MembershipCacheSize),
		"REPLAY_LIMIT": float64(c.ReplayLimit), "SEND_TIMEOUT": float64(c.SendTimeout),
		"WS_WRITE_TIMEOUT": float64(c.WriteTimeout), "WS_PING_INTERVAL": float64(c.PingInterval),
		"PRESENCE_CACHE_TTL": float64(c.PresenceCacheTTL), "PRESENCE_CACHE_SIZE": float64(c.PresenceCacheSize),
		"PRESENCE_QUEUE_SIZE": float64(c.PresenceQueueSize), "REPAIR_HOLD": float64(c.RepairHold),
		"PRESENCE_MAX_ROOM_MEMBERS": float64(c.PresenceMaxRoomMembers),
		"REPAIR_WAIT":               float64(c.RepairWait),
		"RESYNC_RETRY_AFTER":        float64(c.ResyncRetryAfter),
		"MAX_CONNECTIONS_PER_USER":  float64(c.MaxConnsPerUser),
		"MAX_CONNECTIONS_PER_IP":    float64(c.MaxConnsPerIP),
		"RATE_SENDS_PER_SEC":        float64(c.SendRate), "RATE_SENDS_BURST": float64(c.SendBurst),
		"RATE_JOINS_PER_SEC": float64(c.JoinRate), "RATE_JOINS_BURST": float64(c.JoinBurst),
		"SOCKETIO_MAX_PENDING_PER_IP": float64(c.SocketIO.MaxPendingPerIP),
	}
	if _, err := web.ParsePrefixes(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	if _, err := web.ParseOrigins(c.HTTP.AllowedOrigins); err != nil {
		errs = append(errs, err)
	}
	for name, v := range positive {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	if c.ReadLimit != 0 && c.ReadLimit < int64(c.MaxFrameBytes) { // zero: MaxFrameBytes
		errs = append(errs, errors.New("WS_READ_LIMIT must be at least WS_MAX_FRAME_BYTES"))
	}
	if c.PongTimeout <= c.PingInterval {
		errs = append(errs, errors.New("WS_PONG_TIMEOUT must exceed WS_PING_INTERVAL"))
	}
	errs = append(errs, c.Presence.Validate(), c.Dedupe.Validate())
	if len(c.InstanceID) > maxInstanceIDLen || strings.ContainsAny(c.InstanceID, "/ \t\n") {
		errs = append(errs, fmt.Errorf("INSTANCE_ID must be at most %d bytes without '/' or spaces", maxInstanceIDLen))
	}
	if c.DedupePendingTTL <= c.SendTimeout {
		errs = append(errs, errors.New("DEDUPE_PENDING_TTL must exceed SEND_TIMEOUT"))
	}
	return errors.Join(errs...)
}

// SocketIOConfig configures the Socket.IO endpoint at /socket.io/
// (docs/protocol.md#socketio). The defaults are socket.io's own.
type SocketIOConfig struct {
	// PingInterval is the Engine.IO heartbeat period; zero means 25 s.
	PingInterval time.Duration `env:"SOCKETIO_PING_INTERVAL" envDefault:"25s"`
	// PingTimeout closes a session whose pong is this late; zero means 20 s.
	PingTimeout time.Duration `env:"SOCKETIO_PING_TIMEOUT" envDefault:"20s"`
	// MaxPayload bounds a polling request body and a WebSocket message;
	// zero means 1,000,000 bytes.
	MaxPayload int `env:"SOCKETIO_MAX_PAYLOAD" envDefault:"1000000"`
	// ConnectTimeout closes a session that sent no CONNECT; zero means
	// 5 s. socket.io-client sends it right after the handshake; a session
	// without one (no token yet) holds a slot only this long.
	ConnectTimeout time.Duration `env:"SOCKETIO_CONNECT_TIMEOUT" envDefault:"5s"`
	// MaxPendingPerIP bounds the sessions without CONNECT of one client
	// address; zero means 20.
	MaxPendingPerIP int `env:"SOCKETIO_MAX_PENDING_PER_IP" envDefault:"20"`
}

// defaultInstanceID is unique per process: the host name plus random bytes.
func defaultInstanceID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "gateway"
	}
	host = conn.TruncateUTF8(host, 64)
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}
