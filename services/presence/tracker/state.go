package tracker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/presence"
)

// The state lives only in Redis and changes only through these scripts.
// Each is atomic and returns what changed because of this very call, so of
// several instances applying the same command (a redelivery) or sweeping
// the same user, exactly one learns about a transition and publishes it.
// Times are unix ms strings; an entry expires when its score <= now.

// seenLua records a transition's last-seen time (never moving it back) and
// marks the user for the PostgreSQL sync. Prepended to scripts that need it.
const seenLua = `
local function seen(lastKey, dirtyKey, uid, ls)
  local cur = redis.call('HGET', lastKey, uid)
  if cur and tonumber(cur) > tonumber(ls) then ls = cur end
  redis.call('HSET', lastKey, uid, ls)
  redis.call('ZINCRBY', dirtyKey, 1, uid)
  return ls
end
`

// connectScript: KEYS user, online, lastseen, dirty, tombs; ARGV member,
// uid, now, expiry. Returns {1, lastSeen} when the user came online.
var connectScript = goredis.NewScript(seenLua + `
if redis.call('ZSCORE', KEYS[5], ARGV[1]) then
  return {0}
end
redis.call('ZADD', KEYS[1], 'GT', ARGV[4], ARGV[1])
if redis.call('ZSCORE', KEYS[2], ARGV[2]) then
  redis.call('ZADD', KEYS[2], 'GT', ARGV[4], ARGV[2])
  return {0}
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
return {1, seen(KEYS[3], KEYS[4], ARGV[2], ARGV[3])}
`)

// disconnectScript: KEYS user, online, lastseen, dirty, tombs; ARGV member,
// uid, now, tomb expiry. Returns {1, lastSeen} when the user went offline.
var disconnectScript = goredis.NewScript(seenLua + `
redis.call('ZADD', KEYS[5], 'GT', ARGV[4], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #top > 0 then
  redis.call('ZADD', KEYS[2], 'XX', top[2], ARGV[2])
  return {0}
end
if redis.call('ZREM', KEYS[2], ARGV[2]) == 0 then
  return {0}
end
return {1, seen(KEYS[3], KEYS[4], ARGV[2], ARGV[3])}
`)

// heartbeatScript: KEYS online, lastseen, dirty, tombs, then one user key
// per connection; ARGV now, expiry, then member and uid per connection.
// A heartbeat also brings back a connection the sweeper had expired (a
// stalled gateway) or Redis lost, unless it was closed. Returns
// {uid, lastSeen, ...} of the users that came online.
var heartbeatScript = goredis.NewScript(seenLua + `
local out = {}
for i = 5, #KEYS do
  local m = ARGV[(i - 5) * 2 + 3]
  local uid = ARGV[(i - 5) * 2 + 4]
  if not redis.call('ZSCORE', KEYS[4], m) then
    redis.call('ZADD', KEYS[i], 'GT', ARGV[2], m)
    if redis.call('ZSCORE', KEYS[1], uid) then
      redis.call('ZADD', KEYS[1], 'GT', ARGV[2], uid)
    else
      redis.call('ZADD', KEYS[1], ARGV[2], uid)
      table.insert(out, uid)
      table.insert(out, seen(KEYS[2], KEYS[3], uid, ARGV[1]))
    end
  end
end
return out
`)

// sweepUsersScript: KEYS online, lastseen, dirty, then one user key per
// candidate; ARGV now, timeout ms, then the candidates' uids. Drops expired
// connections; a user left with none goes offline, last seen at its last
// heartbeat. Returns {uid, lastSeen, ...} of the users that went offline.
var sweepUsersScript = goredis.NewScript(seenLua + `
local out = {}
for i = 4, #KEYS do
  local uid = ARGV[i - 1]
  local top = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  if #top > 0 and tonumber(top[2]) > tonumber(ARGV[1]) then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[1])
    redis.call('ZADD', KEYS[1], 'XX', top[2], uid)
  else
    redis.call('DEL', KEYS[i])
    if redis.call('ZREM', KEYS[1], uid) == 1 then
      local ls = ARGV[1]
      if #top > 0 then
        ls = string.format('%d', math.min(tonumber(top[2]) - tonumber(ARGV[2]), tonumber(ARGV[1])))
      end
      table.insert(out, uid)
      table.insert(out, seen(KEYS[2], KEYS[3], uid, ls))
    end
  end
end
return out
`)

// typingStartScript: KEYS typing, names, rooms; ARGV uid, username,
// expiry, room. Returns 1 when the user started typing (0: renewed).
var typingStartScript = goredis.NewScript(`
local was = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
redis.call('ZADD', KEYS[3], first[2], ARGV[4])
if was then return 0 end
return 1
`)

// typingStopScript: KEYS typing, names, rooms; ARGV uid, room. Returns
// {1, username} when the user was typing.
var typingStopScript = goredis.NewScript(`
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return {0}
end
local name = redis.call('HGET', KEYS[2], ARGV[1]) or ''
redis.call('HDEL', KEYS[2], ARGV[1])
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('DEL', KEYS[2])
else
  redis.call('ZADD', KEYS[3], first[2], ARGV[2])
end
return {1, name}
`)

// sweepTypingScript: KEYS rooms, then typing and names key per room; ARGV
// now, then the room ids. Returns {room, uid, username, ...} of expired
// typists.
var sweepTypingScript = goredis.NewScript(`
local out = {}
for i = 1, #ARGV - 1 do
  local tk, nk, room = KEYS[2 * i], KEYS[2 * i + 1], ARGV[i + 1]
  local gone = redis.call('ZRANGEBYSCORE', tk, '-inf', ARGV[1])
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', tk, '-inf', ARGV[1])
    for _, uid in ipairs(gone) do
      table.insert(out, room)
      table.insert(out, uid)
      table.insert(out, redis.call('HGET', nk, uid) or '')
      redis.call('HDEL', nk, uid)
    end
  end
  local first = redis.call('ZRANGE', tk, 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('ZREM', KEYS[1], room)
    redis.call('DEL', nk)
  else
    redis.call('ZADD', KEYS[1], first[2], room)
  end
end
return out
`)

// clearDirtyScript: KEYS dirty; ARGV uid and change count pairs. Removes
// the users whose count did not move since it was read.
var clearDirtyScript = goredis.NewScript(`
local n = 0
for i = 1, #ARGV, 2 do
  local cur = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if cur and tonumber(cur) == tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
`)

// Transition is a user's change of online state caused by one call.
type Transition struct {
	// UserID is the user.
	UserID int64
	// Online is the new state.
	Online bool
	// LastSeen is the recorded last-seen time, unix ms.
	LastSeen int64
}

// TypingChange is a typist's start or end caused by one call.
type TypingChange struct {
	RoomID   int64
	UserID   int64
	Username string
	Typing   bool
}

// State applies presence commands and sweeps to the Redis state. It is
// safe for concurrent use, also across processes.
type State struct {
	rdb       goredis.Cmdable
	keys      presence.Keys
	timeout   int64 // ms
	typingTTL int64 // ms
}

// NewState returns the state on rdb with the given timeouts.
func NewState(rdb goredis.Cmdable, keys presence.Keys, timeout, typingTTL time.Duration) *State {
	return &State{rdb: rdb, keys: keys, timeout: timeout.Milliseconds(), typingTTL: typingTTL.Milliseconds()}
}

func ms(v int64) string { return strconv.FormatInt(v, 10) }

func (s *State) userKeys(userID int64) []string {
	return []string{s.keys.User(userID), s.keys.Online(), s.keys.LastSeen(), s.keys.Dirty(), s.keys.Tombs()}
}

// Connect registers a connection at time now (unix ms).
func (s *State) Connect(ctx context.Context, gatewayID string, userID int64, connID string, now int64) (*Transition, error) {
	out, err := connectScript.Run(ctx, s.rdb, s.userKeys(userID),
		presence.Member(gatewayID, connID), userID, ms(now), ms(now+s.timeout)).Slice()
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return flagTransition(out, userID, true)
}

// Disconnect removes a connection at time now.
func (s *State) Disconnect(ctx context.Context, gatewayID string, userID int64, connID string, now int64) (*Transition, error) {
	out, err := disconnectScript.Run(ctx, s.rdb, s.userKeys(userID),
		presence.Member(gatewayID, connID), userID, ms(now), ms(now+s.timeout)).Slice()
	if err != nil {
		return nil, fmt.Errorf("disconnect: %w", err)
	}
	return flagTransition(out, userID, false)
}

func flagTransition(out []any, userID int64, online bool) (*Transition, error) {
	if len(out) == 0 {
		return nil, errors.New("empty script reply")
	}
	if f, _ := out[0].(int64); f != 1 {
		return nil, nil
	}
	if len(out) < 2 {
		return nil, fmt.Errorf("bad script reply %v", out)
	}
	ls, err := toInt(out[1])
	if err != nil {
		return nil, err
	}
	return &Transition{UserID: userID, Online: online, LastSeen: ls}, nil
}

// heartbeatChunk bounds the connections one script call renews, so no
// call holds Redis for long.
const heartbeatChunk = 500

// Heartbeat renews conns of gatewayID at time now.
func (s *State) Heartbeat(ctx context.Context, gatewayID string, conns []presence.Conn, now int64) ([]Transition, error) {
	var res []Transition
	for len(conns) > 0 {
		part := conns[:min(heartbeatChunk, len(conns))]
		conns = conns[len(part):]
		keys := make([]string, 0, 4+len(part))
		keys = append(keys, s.keys.Online(), s.keys.LastSeen(), s.keys.Dirty(), s.keys.Tombs())
		args := make([]any, 0, 2+2*len(part))
		args = append(args, ms(now), ms(now+s.timeout))
		for _, c := range part {
			keys = append(keys, s.keys.User(c.UserID))
			args = append(args, presence.Member(gatewayID, c.ConnID), c.UserID)
		}
		out, err := heartbeatScript.Run(ctx, s.rdb, keys, args...).Slice()
		if err != nil && !errors.Is(err, goredis.Nil) {
			return res, fmt.Errorf("heartbeat: %w", err)
		}
		ts, err := pairs(out, true)
		if err != nil {
			return res, err
		}
		res = append(res, ts...)
	}
	return res, nil
}

// pairs decodes {uid, lastSeen, ...}.
func pairs(out []any, online bool) ([]Transition, error) {
	if len(out)%2 != 0 {
		return nil, fmt.Errorf("bad script reply %v", out)
	}
	res := make([]Transition, 0, len(out)/2)
	for i := 0; i < len(out); i += 2 {
		uid, err := toInt(out[i])
		if err != nil {
			return nil, err
		}
		ls, err := toInt(out[i+1])
		if err != nil {
			return nil, err
		}
		res = append(res, Transition{UserID: uid, Online: online, LastSeen: ls})
	}
	return res, nil
}

func toInt(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bad number %q in script reply", x)
		}
		return n, nil
	}
	return 0, fmt.Errorf("bad value %v in script reply", v)
}

// TypingStart starts or renews a typist at time now; the change is nil on a
// renewal.
func (s *State) TypingStart(ctx context.Context, roomID, userID int64, username string, now int64) (*TypingChange, error) {
	n, err := typingStartScript.Run(ctx, s.rdb,
		[]string{s.keys.Typing(roomID), s.keys.TypingNames(roomID), s.keys.TypingRooms()},
		userID, username, ms(now+s.typingTTL), roomID).Int64()
	if err != nil {
		return nil, fmt.Errorf("typing start: %w", err)
	}
	if n != 1 {
		return nil, nil
	}
	return &TypingChange{RoomID: roomID, UserID: userID, Username: username, Typing: true}, nil
}

// TypingStop ends a typist; the change is nil when the user was not typing.
func (s *State) TypingStop(ctx context.Context, roomID, userID int64, username string) (*TypingChange, error) {
	out, err := typingStopScript.Run(ctx, s.rdb,
		[]string{s.keys.Typing(roomID), s.keys.TypingNames(roomID), s.keys.TypingRooms()},
		userID, roomID).Slice()
	if err != nil {
		return nil, fmt.Errorf("typing stop: %w", err)
	}
	if len(out) < 2 {
		return nil, nil
	}
	if name, _ := out[1].(string); name != "" {
		username = name
	}
	return &TypingChange{RoomID: roomID, UserID: userID, Username: username, Typing: false}, nil
}

// sweepBatch bounds the candidates one sweep script handles.
const sweepBatch = 200

// SweepUsers takes offline every user whose connections all expired by now
// (unix ms, the sweep horizon).
func (s *State) SweepUsers(ctx context.Context, now int64) ([]Transition, error) {
	var res []Transition
	// Each round removes or re-scores every candidate it saw, so the
	// next round sees new ones; the bound only guards against a bug.
	for range 1000 {
		cands, err := s.rdb.ZRangeArgs(ctx, goredis.ZRangeArgs{
			Key: s.keys.Online(), Start: "-inf", Stop: ms(now), ByScore: true, Count: sweepBatch,
		}).Result()
		if err != nil {
			return res, fmt.Errorf("sweep candidates: %w", err)
		}
		if len(cands) == 0 {
			return res, nil
		}
		keys := make([]string, 0, 3+len(cands))
		keys = append(keys, s.keys.Online(), s.keys.LastSeen(), s.keys.Dirty())
		args := make([]any, 0, 2+len(cands))
		args = append(args, ms(now), ms(s.timeout))
		for _, c := range cands {
			uid, err := strconv.ParseInt(c, 10, 64)
			if err != nil {
				// Only the scripts write this set; a foreign member is removed.
				s.rdb.ZRem(ctx, s.keys.Online(), c)
				continue
			}
			keys = append(keys, s.keys.User(uid))
			args = append(args, c)
		}
		out, err := sweepUsersScript.Run(ctx, s.rdb, keys, args...).Slice()
		if err != nil && !errors.Is(err, goredis.Nil) {
			return res, fmt.Errorf("sweep users: %w", err)
		}
		ts, err := pairs(out, false)
		if err != nil {
			return res, err
		}
		res = append(res, ts...)
		if len(cands) < sweepBatch {
			return res, nil
		}
	}
	return res, nil
}

// SweepTyping ends every typist whose TTL ran out by now.
func (s *State) SweepTyping(ctx context.Context, now int64) ([]TypingChange, error) {
	var res []TypingChange
	for range 1000 {
		rooms, err := s.rdb.ZRangeArgs(ctx, goredis.ZRangeArgs{
			Key: s.keys.TypingRooms(), Start: "-inf", Stop: ms(now), ByScore: true, Count: sweepBatch,
		}).Result()
		if err != nil {
			return res, fmt.Errorf("sweep typing rooms: %w", err)
		}
		if len(rooms) == 0 {
			return res, nil
		}
		keys := make([]string, 0, 1+2*len(rooms))
		keys = append(keys, s.keys.TypingRooms())
		args := make([]any, 0, 1+len(rooms))
		args = append(args, ms(now))
		for _, r := range rooms {
			rid, err := strconv.ParseInt(r, 10, 64)
			if err != nil {
				s.rdb.ZRem(ctx, s.keys.TypingRooms(), r)
				continue
			}
			keys = append(keys, s.keys.Typing(rid), s.keys.TypingNames(rid))
			args = append(args, r)
		}
		out, err := sweepTypingScript.Run(ctx, s.rdb, keys, args...).Slice()
		if err != nil && !errors.Is(err, goredis.Nil) {
			return res, fmt.Errorf("sweep typing: %w", err)
		}
		if len(out)%3 != 0 {
			return res, fmt.Errorf("bad typing sweep reply %v", out)
		}
		for i := 0; i < len(out); i += 3 {
			rid, err1 := toInt(out[i])
			uid, err2 := toInt(out[i+1])
			if err := errors.Join(err1, err2); err != nil {
				return res, err
			}
			name, _ := out[i+2].(string)
			res = append(res, TypingChange{RoomID: rid, UserID: uid, Username: name})
		}
		if len(rooms) < sweepBatch {
			return res, nil
		}
	}
	return res, nil
}

// TrimTombs forgets closed connections whose tomb expired by now.
func (s *State) TrimTombs(ctx context.Context, now int64) error {
	if err := s.rdb.ZRemRangeByScore(ctx, s.keys.Tombs(), "-inf", ms(now)).Err(); err != nil {
		return fmt.Errorf("trim tombs: %w", err)
	}
	return nil
}
