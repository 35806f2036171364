package bench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"relay/pkg/chat"
)

// Scenario names.
const (
	ScenarioChat      = "chat"
	ScenarioFanout    = "fanout"
	ScenarioIdle      = "idle"
	ScenarioMax       = "max"
	ScenarioArtillery = "artillery"
)

// DefaultGateways are the gateway instances scripts/run.sh starts; chatbench
// connects to them directly (round robin), bypassing devproxy, so the proxy's
// own cost is not part of the numbers.
var defaultGateways = []string{"ws://127.0.0.1:8090/ws", "ws://127.0.0.1:8091/ws"}

// Gateway limits chatbench checks parameters against (docs/protocol.md).
const (
	// gatewayMaxRooms is WS_MAX_ROOMS; chatbench keeps well under it because
	// every join is a frame against the per-connection rate limit.
	maxRoomsPerUser = 40
	// maxRoomSize is what one POST /api/rooms can create plus what chatbench
	// is willing to add one POST /members at a time.
	maxRoomSize = 20000
)

// UsageError is a bad command line or parameter: main prints it and exits 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// SizeDist is how many members each room gets: Min when Min == Max, else
// drawn uniformly from [Min, Max] with the run's seed.
type SizeDist struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// String renders the distribution the way --room-size takes it.
func (d SizeDist) String() string {
	if d.Min == d.Max {
		return strconv.Itoa(d.Min)
	}
	return fmt.Sprintf("%d-%d", d.Min, d.Max)
}

// ParseSizeDist reads "10" (every room 10 members) or "5-50" (uniform).
func ParseSizeDist(s string) (SizeDist, error) {
	lo, hi, ranged := strings.Cut(strings.TrimSpace(s), "-")
	a, err := strconv.Atoi(lo)
	if err != nil {
		return SizeDist{}, fmt.Errorf("room size %q: want N or MIN-MAX", s)
	}
	b := a
	if ranged {
		if b, err = strconv.Atoi(hi); err != nil {
			return SizeDist{}, fmt.Errorf("room size %q: want N or MIN-MAX", s)
		}
	}
	if a < 1 || b < a {
		return SizeDist{}, fmt.Errorf("room size %q: need 1 <= MIN <= MAX", s)
	}
	return SizeDist{Min: a, Max: b}, nil
}

// Params is one run's configuration: a scenario's defaults with the flags
// given on top. Durations and rates are totals over all connections.
type Params struct {
	// Scenario is the named load shape (chat, fanout, idle, max, artillery).
	Scenario string `json:"scenario"`
	// API is the api's base URL (register, login, rooms).
	API string `json:"api"`
	// Gateways are the WebSocket URLs connections are spread over round robin.
	Gateways []string `json:"gateways"`
	// Protocol is the wire protocol: native (/ws) or socketio (Socket.IO
	// v4 over WebSocket at /socket.io/).
	Protocol string `json:"protocol"`
	// GatewaysDefaulted is true when --gateways was not given.
	GatewaysDefaulted bool `json:"gatewaysDefaulted"`
	// Users is how many accounts (bench_<prefix>_<i>) take part.
	Users int `json:"users"`
	// Conns is how many WebSocket connections are opened; connection i
	// belongs to user i mod Users (more connections than users = devices).
	Conns int `json:"conns"`
	// UserPrefix names the accounts: <UserPrefix>_<i>.
	UserPrefix string `json:"userPrefix"`
	// Rooms is how many group rooms are created for the run.
	Rooms int `json:"rooms"`
	// RoomSize is the members per room.
	RoomSize SizeDist `json:"roomSize"`
	// Senders is how many users send; 0 means nobody (idle).
	Senders int `json:"senders"`
	// Rate is the total messages per second the senders send together.
	Rate float64 `json:"rate"`
	// Steps are the send rates the max scenario tries, in order.
	Steps []float64 `json:"steps,omitempty"`
	// MaxP99 is the max scenario's limit on p99 send→delivery.
	MaxP99 time.Duration `json:"maxP99"`
	// Duration is how long messages are sent (idle: how long connections
	// are held; max: each step; artillery: each arrival phase).
	Duration time.Duration `json:"duration"`
	// Size is the content length of each message in bytes.
	Size int `json:"size"`
	// Ramp is how many connections are opened per second.
	Ramp float64 `json:"ramp"`
	// Heartbeat is how often each connection sends an application ping
	// (docs/protocol.md keepalive); 0 sends none.
	Heartbeat time.Duration `json:"heartbeat"`
	// Drain is how long to wait after the last send for acks, deliveries
	// and persistence before counting what is missing as lost.
	Drain time.Duration `json:"drain"`
	// SetupTimeout bounds registering users and creating rooms.
	SetupTimeout time.Duration `json:"setupTimeout"`
	// Arrivals are the artillery phases' new virtual users per second.
	Arrivals []float64 `json:"arrivals,omitempty"`
	// ThinkBefore and ThinkAfter are the artillery pauses around the send.
	ThinkBefore time.Duration `json:"thinkBefore,omitempty"`
	ThinkAfter  time.Duration `json:"thinkAfter,omitempty"`
	// PG is the PostgreSQL URL polled for send→persisted; "" is off.
	PG string `json:"pg,omitempty"`
	// Persister is the persister's base URL for GET /lag; "" is off.
	Persister string `json:"persister,omitempty"`
	// Pids are extra processes to sample.
	Pids []int `json:"pids,omitempty"`
	// NoStack leaves the stack's pid files out of the process table unless
	// Procs names "stack" (compare mode, for peers).
	NoStack bool `json:"noStack,omitempty"`
	// Procs are process names to sample; empty means the stack's pid files.
	Procs []string `json:"procs,omitempty"`
	// LocalAddrs are source IPs spread over the connections (more
	// ephemeral ports); empty lets the kernel choose.
	LocalAddrs []string `json:"localAddrs,omitempty"`
	// ConnRate is the gateway's per-connection frame limit (WS_RATE); a
	// sender is never asked to go faster.
	ConnRate float64 `json:"connRate"`
	// Seed makes room sizes reproducible.
	Seed int64 `json:"seed"`
	// JSON is where the results are written; "" is nowhere.
	JSON string `json:"-"`
	// DataDir holds the token cache (<DataDir>/bench/tokens.json).
	DataDir string `json:"-"`
	// CPUProfile, when set, is where chatbench writes its own CPU profile
	// (to check that the tool is not the bottleneck).
	CPUProfile string `json:"-"`
}

// Scenario returns the defaults of a named scenario.
func Scenario(name string) (Params, error) {
	p := Params{
		Scenario:          name,
		API:               "http://127.0.0.1:8080",
		Gateways:          slices.Clone(defaultGateways),
		Protocol:          ProtocolNative,
		UserPrefix:        "bench_" + name,
		Duration:          60 * time.Second,
		Size:              100,
		Ramp:              200,
		Heartbeat:         30 * time.Second,
		Drain:             10 * time.Second,
		SetupTimeout:      10 * time.Minute,
		ConnRate:          20,
		Seed:              1,
		PG:                envOr("DATABASE_URL", "postgres://relay:relay@127.0.0.1:5432/relay?sslmode=disable"),
		Persister:         "http://127.0.0.1:8110",
		MaxP99:            50 * time.Millisecond,
		GatewaysDefaulted: true,
	}
	switch name {
	case ScenarioChat:
		p.Users, p.Rooms, p.RoomSize, p.Senders, p.Rate = 1000, 100, SizeDist{10, 10}, 1000, 1000
	case ScenarioFanout:
		p.Users, p.Rooms, p.RoomSize, p.Senders, p.Rate = 1000, 1, SizeDist{1000, 1000}, 50, 50
	case ScenarioIdle:
		// 1,000 accounts with 10 devices each: registering 10,000 accounts
		// (bcrypt) would take longer than the run, and a connection costs
		// the gateway the same whoever owns it.
		p.Users, p.Conns, p.Rooms, p.RoomSize = 1000, 10000, 100, SizeDist{10, 10}
		p.Ramp = 500
		p.Gateways = p.Gateways[:1] // the scenario measures ONE instance
	case ScenarioMax:
		p.Users, p.Rooms, p.RoomSize, p.Senders = 1000, 100, SizeDist{10, 10}, 1000
		p.Steps = []float64{500, 1000, 1500, 2000, 2500, 3000}
		p.Rate = p.Steps[0]
		p.Duration = 20 * time.Second
		p.UserPrefix = "bench_chat" // the chat shape: reuse its accounts
	case ScenarioArtillery:
		p.Users, p.Rooms, p.RoomSize = 500, 10, SizeDist{50, 50}
		p.Arrivals = []float64{10, 50}
		p.Duration = 30 * time.Second
		p.ThinkBefore, p.ThinkAfter = 2*time.Second, 5*time.Second
	default:
		return Params{}, usagef("unknown scenario %q (want chat, fanout, idle, max or artillery)", name)
	}
	return p, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// ParseArgs builds Params from the command line: --scenario picks the
// defaults, every other flag given overrides one of them. -h prints usage
// to out and returns flag.ErrHelp.
func ParseArgs(args []string, out io.Writer) (Params, error) {
	fs := flag.NewFlagSet("chatbench", flag.ContinueOnError)
	fs.SetOutput(out)
	var (
		scenario   = fs.String("scenario", ScenarioChat, "load shape: chat, fanout, idle, max, artillery")
		api        = fs.String("api", "", "api base URL (default http://127.0.0.1:8080)")
		gateways   = fs.String("gateways", "", "comma list of gateway WebSocket URLs or host:port (default: the two local instances directly, bypassing devproxy)")
		proto      = fs.String("protocol", ProtocolNative, "wire protocol: native (/ws), socketio (Socket.IO v4 over WebSocket at /socket.io/; host:port gateways get that path), seednode (socketio with auth.userId: the seed's Node.js reference) or centrifugo (Centrifugo's JSON protocol; give its /connection/websocket URL)")
		users      = fs.Int("users", 0, "accounts taking part")
		conns      = fs.Int("conns", 0, "WebSocket connections (default = users; more than users = several devices per user)")
		prefix     = fs.String("user-prefix", "", "account names are <prefix>_<i> (default bench_<scenario>)")
		rooms      = fs.Int("rooms", 0, "group rooms created for the run")
		roomSize   = fs.String("room-size", "", "members per room: N, or MIN-MAX drawn uniformly")
		senders    = fs.Int("senders", 0, "users that send (spread over the rooms)")
		rate       = fs.Float64("rate", 0, "total messages per second")
		steps      = fs.String("steps", "", "max: comma list of rates to try in order")
		maxP99     = fs.Duration("max-p99", 0, "max: a step holds while p99 send→delivery stays below this")
		duration   = fs.Duration("duration", 0, "send duration (idle: hold; max: per step; artillery: per phase)")
		size       = fs.Int("size", 0, "message content bytes")
		ramp       = fs.Float64("ramp", 0, "connections opened per second")
		heartbeat  = fs.Duration("heartbeat", 0, "application ping interval per connection (0s = none)")
		drain      = fs.Duration("drain", 0, "wait after the last send for acks/deliveries before counting losses")
		setup      = fs.Duration("setup-timeout", 0, "bound on registering users and creating rooms")
		arrivals   = fs.String("arrivals", "", "artillery: comma list of arrival rates (virtual users/s), one phase each")
		think1     = fs.Duration("think-before", 0, "artillery: pause between join and send")
		think2     = fs.Duration("think-after", 0, "artillery: pause between send and disconnect")
		pg         = fs.String("pg", "", "PostgreSQL URL polled for send→persisted latency, or off (default $DATABASE_URL or the local one)")
		persister  = fs.String("persister", "", "persister base URL for GET /lag, or off (default http://127.0.0.1:8110)")
		pids       = fs.String("pids", "", "comma list of extra pids to sample")
		procs      = fs.String("procs", "", "comma list of process names to sample (default: the stack from .data/pids)")
		localAddrs = fs.String("local-addrs", "", "comma list of source IPs to spread connections over (default: kernel's choice; 127.0.0.1-8 for >5000 loopback connections)")
		connRate   = fs.Float64("conn-rate", 0, "the gateway's per-connection frame rate limit (WS_RATE)")
		seed       = fs.Int64("seed", 0, "seed for room sizes")
		jsonOut    = fs.String("json", "", "write the results as JSON to this file")
		dataDir    = fs.String("data-dir", "", "where the token cache lives (default <repo>/.data)")
		cpuProf    = fs.String("cpuprofile", "", "write chatbench's own CPU profile to this file")
	)
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: chatbench [--scenario NAME] [flags]\n\n"+
			"Load-tests a running relay stack (make bench starts one) and prints latency,\n"+
			"throughput, loss and per-process CPU/memory. Every scenario default can be\n"+
			"overridden by the flags below. Exit status: 0 done, 1 run failed, 2 bad parameters.\n\n"+
			"scenarios:\n"+
			"  chat       1,000 users in 100 rooms of 10, all sending, 1,000 msgs/s for 60 s\n"+
			"  fanout     one room of 1,000, 50 senders, 50 msgs/s (50,000 deliveries/s) for 60 s\n"+
			"  idle       10,000 connections (1,000 users x 10) on ONE gateway for 60 s, pings every 30 s\n"+
			"  max        the chat shape at 500..3000 msgs/s, 20 s a step, until p99 send→deliver >= 50 ms or loss\n"+
			"  artillery  virtual users arrive at 10/s then 50/s (30 s each): join, think 2 s, send, think 5 s, leave\n"+
			"(docs/performance.md explains what is measured)\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Params{}, err
		}
		return Params{}, &UsageError{Msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return Params{}, usagef("unexpected argument %q (flags only)", fs.Arg(0))
	}
	p, err := Scenario(*scenario)
	if err != nil {
		return Params{}, err
	}
	var errs []error
	fs.Visit(func(f *flag.Flag) {
		var err error
		switch f.Name {
		case "api":
			p.API = strings.TrimRight(*api, "/")
		case "gateways":
			p.Gateways, err = parseGateways(*gateways)
			p.GatewaysDefaulted = false
		case "protocol":
			p.Protocol = *proto
		case "users":
			p.Users = *users
		case "conns":
			p.Conns = *conns
		case "user-prefix":
			p.UserPrefix = *prefix
		case "rooms":
			p.Rooms = *rooms
		case "room-size":
			p.RoomSize, err = ParseSizeDist(*roomSize)
		case "senders":
			p.Senders = *senders
		case "rate":
			p.Rate = *rate
			if p.Scenario == ScenarioMax {
				err = errors.New("--rate: the max scenario steps its rate; use --steps")
			}
		case "steps":
			p.Steps, err = parseFloats(*steps)
			if err == nil && len(p.Steps) > 0 {
				p.Rate = p.Steps[0]
			}
		case "max-p99":
			p.MaxP99 = *maxP99
		case "duration":
			p.Duration = *duration
		case "size":
			p.Size = *size
		case "ramp":
			p.Ramp = *ramp
		case "heartbeat":
			p.Heartbeat = *heartbeat
		case "drain":
			p.Drain = *drain
		case "setup-timeout":
			p.SetupTimeout = *setup
		case "arrivals":
			p.Arrivals, err = parseFloats(*arrivals)
		case "think-before":
			p.ThinkBefore = *think1
		case "think-after":
			p.ThinkAfter = *think2
		case "pg":
			p.PG = offOr(*pg)
		case "persister":
			p.Persister = strings.TrimRight(offOr(*persister), "/")
		case "pids":
			p.Pids, err = parseInts(*pids)
		case "procs":
			p.Procs = splitList(*procs)
		case "local-addrs":
			p.LocalAddrs = splitList(*localAddrs)
		case "conn-rate":
			p.ConnRate = *connRate
		case "seed":
			p.Seed = *seed
		case "json":
			p.JSON = *jsonOut
		case "data-dir":
			p.DataDir = *dataDir
		case "cpuprofile":
			p.CPUProfile = *cpuProf
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", f.Name, err))
		}
	})
	if len(errs) > 0 {
		return Params{}, &UsageError{Msg: errors.Join(errs...).Error()}
	}
	if p.Conns == 0 {
		p.Conns = p.Users
	}
	if socketIOFamily(p.Protocol) {
		for i, g := range p.Gateways {
			u, err := socketIOURL(g)
			if err != nil {
				return Params{}, usagef("--gateways: %v", err)
			}
			p.Gateways[i] = u
		}
	}
	if err := p.Validate(); err != nil {
		return Params{}, err
	}
	return p, nil
}

func offOr(s string) string {
	if strings.EqualFold(strings.TrimSpace(s), "off") {
		return ""
	}
	return strings.TrimSpace(s)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseFloats(s string) ([]float64, error) {
	var out []float64
	for _, f := range splitList(s) {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is not a pid", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// parseGateways accepts ws(s)://host:port/path URLs or bare host:port
// (taken as ws://host:port/ws).
func parseGateways(s string) ([]string, error) {
	var out []string
	for _, g := range splitList(s) {
		if !strings.Contains(g, "://") {
			if _, _, err := net.SplitHostPort(g); err != nil {
				return nil, fmt.Errorf("%q: want ws://host:port/ws or host:port", g)
			}
			g = "ws://" + g + "/ws"
		}
		u, err := url.Parse(g)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return nil, fmt.Errorf("%q: want ws://host:port/ws or host:port", g)
		}
		if u.Path == "" {
			u.Path = "/ws"
		}
		out = append(out, u.String())
	}
	if len(out) == 0 {
		return nil, errors.New("no gateway given")
	}
	return out, nil
}

// Validate refuses parameters the run could not honour, with a message that
// says which flag to change.
func (p *Params) Validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }

	if u, err := url.Parse(p.API); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("--api %q: want http://host:port", p.API)
	}
	if len(p.Gateways) == 0 {
		bad("--gateways: at least one gateway is needed")
	}
	switch p.Protocol {
	case ProtocolNative, ProtocolSocketIO, ProtocolSeedNode, ProtocolCentrifugo:
	default:
		bad("--protocol %q: want native, socketio, seednode or centrifugo", p.Protocol)
	}
	if p.Users < 1 || p.Users > 100000 {
		bad("--users %d: want 1..100000", p.Users)
	}
	if p.Scenario != ScenarioArtillery && (p.Conns < p.Users || p.Conns > 200000) {
		bad("--conns %d: want --users (%d) .. 200000", p.Conns, p.Users)
	}
	if !validPrefix(p.UserPrefix) {
		bad("--user-prefix %q: 1-20 characters of a-z, 0-9, _ . -", p.UserPrefix)
	}
	if p.Rooms < 0 || p.Rooms > 100000 {
		bad("--rooms %d: want 0..100000", p.Rooms)
	}
	if p.RoomSize.Min < 1 || p.RoomSize.Max < p.RoomSize.Min {
		bad("--room-size %s: need 1 <= MIN <= MAX", p.RoomSize)
	} else if p.RoomSize.Max > p.Users {
		bad("--room-size %s: a room cannot have more members than --users (%d)", p.RoomSize, p.Users)
	} else if p.RoomSize.Max > maxRoomSize {
		bad("--room-size %s: at most %d members", p.RoomSize, maxRoomSize)
	}
	if p.Users > 0 && p.Rooms > 0 && p.RoomSize.Max >= 1 {
		total := float64(p.Rooms) * float64(p.RoomSize.Max)
		if math.Ceil(total/float64(p.Users)) > maxRoomsPerUser {
			bad("--rooms %d × --room-size %s puts up to %.0f rooms on one user; chatbench joins at most %d per connection (every join is a frame against the gateway's rate limit): add users or fewer/smaller rooms",
				p.Rooms, p.RoomSize, math.Ceil(total/float64(p.Users)), maxRoomsPerUser)
		}
	}
	if p.Size < 1 || p.Size > chat.MaxContentBytes {
		bad("--size %d: want 1..%d bytes (the gateway's content limit)", p.Size, chat.MaxContentBytes)
	}
	if p.Duration <= 0 || p.Duration > 24*time.Hour {
		bad("--duration %s: want more than 0 and at most 24h", p.Duration)
	}
	if p.Ramp <= 0 || p.Ramp > 100000 {
		bad("--ramp %g: want 0 < connections/s <= 100000", p.Ramp)
	}
	if p.Heartbeat != 0 && (p.Heartbeat < time.Second || p.Heartbeat > 10*time.Minute) {
		bad("--heartbeat %s: want 0s (off) or 1s..10m", p.Heartbeat)
	}
	if p.Drain < 0 || p.Drain > 10*time.Minute {
		bad("--drain %s: want 0..10m", p.Drain)
	}
	if p.SetupTimeout <= 0 {
		bad("--setup-timeout %s: want more than 0", p.SetupTimeout)
	}
	if p.ConnRate <= 0 {
		bad("--conn-rate %g: want more than 0", p.ConnRate)
	}
	if p.MaxP99 <= 0 {
		bad("--max-p99 %s: want more than 0", p.MaxP99)
	}
	for _, a := range p.LocalAddrs {
		if net.ParseIP(a) == nil {
			bad("--local-addrs: %q is not an IP address", a)
		}
	}
	if p.PG != "" {
		if _, err := pgx.ParseConfig(p.PG); err != nil {
			bad("--pg: %v", err)
		}
	}
	if p.Persister != "" {
		if u, err := url.Parse(p.Persister); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("--persister %q: want http://host:port or off", p.Persister)
		}
	}
	if p.JSON != "" {
		if st, err := os.Stat(filepath.Dir(p.JSON)); err != nil || !st.IsDir() {
			bad("--json %q: directory %q does not exist", p.JSON, filepath.Dir(p.JSON))
		}
	}

	rates := []float64{p.Rate}
	if p.Scenario == ScenarioMax {
		rates = p.Steps
		if len(p.Steps) == 0 {
			bad("--steps: the max scenario needs at least one rate")
		}
		if !sort.Float64sAreSorted(p.Steps) {
			bad("--steps %v: rates must be ascending", p.Steps)
		}
	}
	switch p.Scenario {
	case ScenarioArtillery:
		if len(p.Arrivals) == 0 {
			bad("--arrivals: artillery needs at least one phase")
		}
		for _, a := range p.Arrivals {
			if a <= 0 || a > 10000 {
				bad("--arrivals %g: want 0 < virtual users/s <= 10000", a)
			}
		}
		if p.Rooms < 1 {
			bad("--rooms %d: artillery's virtual users join a room; want at least 1", p.Rooms)
		} else if p.Rooms*p.RoomSize.Min < p.Users {
			bad("--rooms %d × --room-size %s leaves users without a room; every artillery user needs one", p.Rooms, p.RoomSize)
		}
		if p.ThinkBefore < 0 || p.ThinkAfter < 0 {
			bad("--think-before/--think-after: want 0 or more")
		}
	case ScenarioIdle:
		if p.Senders != 0 || p.Rate != 0 {
			bad("--senders/--rate: the idle scenario sends no messages (use chat)")
		}
	default:
		for _, r := range rates {
			if r <= 0 || r > 100000 {
				bad("--rate %g: want 0 < messages/s <= 100000", r)
			}
		}
		if p.Senders < 1 || p.Senders > p.Users {
			bad("--senders %d: want 1..--users (%d)", p.Senders, p.Users)
		} else if p.Rooms < 1 {
			bad("--rooms %d: senders need a room; want at least 1", p.Rooms)
		}
		if p.Senders >= 1 {
			for _, r := range rates {
				if per := r / float64(p.Senders); per > p.ConnRate {
					bad("rate %g msgs/s over %d senders is %.1f msgs/s per connection, above the gateway's limit of %g frames/s per connection (WS_RATE; --conn-rate): add --senders",
						r, p.Senders, per, p.ConnRate)
				}
			}
		}
	}
	if len(errs) > 0 {
		return &UsageError{Msg: strings.Join(errs, "\n")}
	}
	return nil
}

func validPrefix(s string) bool {
	if len(s) < 1 || len(s) > 20 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return false
		}
	}
	return true
}
