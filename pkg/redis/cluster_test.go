package redis_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/presence"
	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/pkg/testenv"
)

// Every key a multi-key script or transaction touches together is in one
// hash slot: a room's keys and its channel; all of presence's keys.
func TestKeysShareSlots(t *testing.T) {
	k := redis.Keys{Prefix: "relay:"}
	for _, room := range []int64{1, 7, 123456789} {
		want := redis.Slot(k.RoomSeq(room))
		for _, key := range []string{k.RoomHistory(room), k.RoomRedactions(room), k.RoomRedactionIndex(room), k.RoomChannel(room)} {
			if redis.Slot(key) != want {
				t.Errorf("room %d: %s in slot %d, its seq key in %d", room, key, redis.Slot(key), want)
			}
		}
	}
	p := presence.NewKeys("relay:")
	want := redis.Slot(p.Online())
	for _, key := range []string{p.Commands(), p.Events(), p.User(1), p.User(99), p.LastSeen(), p.Tombs(), p.Dirty(),
		p.Typing(3), p.TypingNames(3), p.TypingRooms()} {
		if redis.Slot(key) != want {
			t.Errorf("presence key %s in slot %d, %s in %d", key, redis.Slot(key), p.Online(), want)
		}
	}
}

// On a real Redis Cluster: Open makes a cluster client; the publish script
// (keys plus SPUBLISH in one slot) runs for rooms on every shard, directly
// and pipelined by SHA; each room's shard channel delivers its
// publications; history reads back; and after a master is killed its
// replica takes over and publishing goes on.
func TestOnRedisCluster(t *testing.T) {
	t.Parallel()
	rc := testenv.StartRedisCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := redis.Open(ctx, rc.Config, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !redis.IsCluster(c) {
		t.Fatalf("Open with REDIS_CLUSTER gave %T", c)
	}
	k := redis.Keys{Prefix: rc.Config.Prefix}

	// Slot agrees with the server's CLUSTER KEYSLOT, hash tags included.
	for _, key := range []string{"", "foo", "bar", "123456789", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap",
		"foo{bar}{zap}", k.RoomSeq(42), k.RoomChannel(42), presence.NewKeys(k.Prefix).Online()} {
		want, err := c.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := redis.Slot(key); int64(got) != want {
			t.Errorf("Slot(%q) = %d, server says %d", key, got, want)
		}
	}

	// Rooms until every master owns at least one.
	cc := c.(*goredis.ClusterClient)
	masterOf := func(room int64) string {
		slots, err := cc.ClusterShards(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		slot := int64(redis.Slot(k.RoomChannel(room)))
		for _, s := range slots {
			for _, r := range s.Slots {
				if slot >= r.Start && slot <= r.End {
					for _, n := range s.Nodes {
						if n.Role == "master" {
							return n.Endpoint + ":" + strconv.FormatInt(n.Port, 10)
						}
					}
				}
			}
		}
		t.Fatalf("no master for slot %d", slot)
		return ""
	}
	var rooms []int64
	owners := map[string]int64{}
	for room := int64(1); len(owners) < 3; room++ {
		if m := masterOf(room); owners[m] == 0 {
			owners[m] = room
			rooms = append(rooms, room)
		}
	}

	// One subscription per room: SSUBSCRIBE goes to the slot's shard.
	subs := map[int64]<-chan *goredis.Message{}
	for _, room := range rooms {
		ps := c.SSubscribe(ctx, k.RoomChannel(room))
		defer ps.Close()
		if _, err := ps.Receive(ctx); err != nil {
			t.Fatalf("ssubscribe room %d: %v", room, err)
		}
		subs[room] = ps.Channel()
	}
	expect := func(room, seq int64) {
		t.Helper()
		select {
		case m := <-subs[room]:
			p, err := protocol.DecodePublication([]byte(m.Payload))
			if err != nil || p.RoomID != room || p.Seq != seq {
				t.Fatalf("room %d: got %s (%v), want seq %d", room, m.Payload, err, seq)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("room %d: seq %d not delivered on its shard channel", room, seq)
		}
	}

	for _, room := range rooms {
		if res, _, err := redis.Publish(ctx, c, k, room, 1, nil, payload(t, room, 1, nil), 100); err != nil || res != redis.Published {
			t.Fatalf("room %d: publish %v %v", room, res, err)
		}
		expect(room, 1)
	}
	// Pipelined by SHA over all shards, after loading the script on each.
	if err := redis.LoadScripts(ctx, c); err != nil {
		t.Fatal(err)
	}
	pipe := c.Pipeline()
	var cmds []*goredis.Cmd
	for _, room := range rooms {
		cmds = append(cmds, redis.QueuePublish(ctx, pipe, k, room, 2, ptr(1), payload(t, room, 2, ptr(1)), 100))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for i, cmd := range cmds {
		if res, _, err := redis.PublishReply(cmd); err != nil || res != redis.Published {
			t.Fatalf("room %d: pipelined publish %v %v", rooms[i], res, err)
		}
		expect(rooms[i], 2)
	}
	for _, room := range rooms {
		pubs, complete, err := redis.History(ctx, c, k, room, 0, 10)
		if err != nil || !complete || len(pubs) != 2 || pubs[1].Seq != 2 {
			t.Fatalf("room %d history: %d pubs, complete %v, %v", room, len(pubs), complete, err)
		}
	}

	// A master dies: its replica is promoted, the room's keys survive and
	// publishing to it goes on.
	victim := rooms[0]
	addr := masterOf(victim)
	idx := -1
	for i, a := range rc.Addrs {
		if a == addr {
			idx = i
		}
	}
	if err := rc.Kill(idx); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, _, err := redis.Publish(ctx, c, k, victim, 3, ptr(2), payload(t, victim, 3, ptr(2)), 100)
		if err == nil {
			if res != redis.Published {
				t.Fatalf("after failover: %v", res)
			}
			break
		}
		if time.Now().After(deadline) {
			other := goredis.NewClient(&goredis.Options{Addr: rc.Addrs[(idx+1)%len(rc.Addrs)]})
			nodes, _ := other.ClusterNodes(ctx).Result()
			_ = other.Close()
			logs := ""
			for i := range rc.Addrs {
				if i != idx {
					logs += rc.Addrs[i] + ":\n" + rc.Log(i) + "\n"
				}
			}
			t.Fatalf("no publish within 60 s of killing master %s: %v\ncluster nodes:\n%s\n%s", addr, err, nodes, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("publishing again %v after the kill", time.Since(killed).Round(time.Millisecond))
	if m := masterOf(victim); m == addr {
		t.Fatalf("slot still on the killed master %s", addr)
	}
	// The subscription reconnected to the promoted replica (go-redis
	// resubscribes); a later publication reaches it.
	deadline = time.Now().Add(30 * time.Second)
	for seq := int64(4); ; seq++ {
		if _, _, err := redis.Publish(ctx, c, k, victim, seq, ptr(seq-1), payload(t, victim, seq, ptr(seq-1)), 100); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-subs[victim]:
			if p, _ := protocol.DecodePublication([]byte(m.Payload)); p != nil && p.Seq >= 3 {
				t.Logf("subscriber back %v after the kill", time.Since(killed).Round(time.Millisecond))
				return
			}
		case <-time.After(500 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the shard channel's subscriber never heard from the promoted replica")
		}
	}
}
