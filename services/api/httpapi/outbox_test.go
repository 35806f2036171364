package httpapi_test

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"relay/pkg/events"
	"relay/pkg/kafka"
)

// TestKafkaDownEventsWaitInOutbox: while Kafka refuses, membership changes
// still succeed and their events wait in the outbox (the pending gauge
// says how many); once Kafka is back every one is produced, in order, and
// the outbox is empty.
func TestKafkaDownEventsWaitInOutbox(t *testing.T) {
	p := &switchPublisher{}
	p.down.Store(true)
	e := newAPI(t, envOptions{publisher: p})
	prod, err := kafka.NewProducer(e.brokers, e.topic, "api-test", propagation.TraceContext{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prod.Close() })
	p.mu.Lock()
	p.next = prod
	p.mu.Unlock()

	a, b, c, d := e.user("kim"), e.user("lou"), e.user("max"), e.user("ned")
	ch := e.room(a, "channel", "outage", b)
	e.do("POST", "/api/rooms/"+ch.ID+"/join", c.token, nil).expect(t, 200, nil)
	e.do("POST", "/api/rooms/"+ch.ID+"/leave", b.token, nil).expect(t, 204, nil)
	e.do("POST", "/api/rooms/"+ch.ID+"/members", a.token, map[string]string{"userId": d.sid}).expect(t, 201, nil)
	e.do("POST", "/api/rooms/"+ch.ID+"/join", b.token, nil).expect(t, 200, nil)
	want := []string{
		fmt.Sprintf("member_joined:%d:kim:admin", a.id),
		fmt.Sprintf("member_joined:%d:lou:member", b.id),
		fmt.Sprintf("member_joined:%d:max:member", c.id),
		fmt.Sprintf("member_left:%d:lou", b.id),
		fmt.Sprintf("member_joined:%d:ned:member", d.id),
		fmt.Sprintf("member_joined:%d:lou:member", b.id),
	}

	// The relay keeps trying and drops nothing.
	deadline := time.Now().Add(20 * time.Second)
	for p.failures.Load() < 3 || e.pendingGauge() != len(want) {
		if time.Now().After(deadline) {
			t.Fatalf("relay attempts %d, pending gauge %d; want >= 3 and %d", p.failures.Load(), e.pendingGauge(), len(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := e.outboxDepth(); n != int64(len(want)) {
		t.Fatalf("outbox holds %d events while Kafka is down, want %d", n, len(want))
	}
	if recs := e.topicRecords(); len(recs) != 0 {
		t.Fatalf("%d records produced while Kafka was down", len(recs))
	}

	p.down.Store(false)
	if got := eventsString(e.events(), ch.ID); !slices.Equal(got, want) {
		t.Fatalf("events after the outage\n got %v\nwant %v", got, want)
	}
	if n := e.outboxDepth(); n != 0 {
		t.Fatalf("outbox holds %d events after the outage", n)
	}
}

// TestTwoRelaysOneAtATime: two api instances on one database; only one
// relays, a room's events come out in commit order, none is lost or
// doubled, and when the relaying instance stops the other takes over.
func TestTwoRelaysOneAtATime(t *testing.T) {
	log := &eventLog{}
	e := newAPI(t, envOptions{publisher: &recordingPublisher{instance: "one", log: log}})
	url2, stop2 := e.another(&recordingPublisher{instance: "two", log: log})
	url1, stop1 := e.url, e.stop

	owner := e.user("own")
	users := []testUser{e.user("ann"), e.user("bob"), e.user("cat")}
	rooms := make([]roomResp, len(users))
	want := map[string][]string{}
	for i := range users {
		rooms[i] = e.room(owner, "channel", fmt.Sprintf("r%d", i))
		want[rooms[i].ID] = []string{fmt.Sprintf("member_joined:%d:own:admin", owner.id)}
	}
	// Each user joins and leaves their room repeatedly, alternating between
	// the two instances; the rooms' changes interleave.
	urls := []string{url1, url2}
	churn := func(rounds int) {
		for r := range rounds {
			for i, u := range users {
				e.url = urls[(r+i)%len(urls)]
				e.do("POST", "/api/rooms/"+rooms[i].ID+"/join", u.token, nil).expect(t, 200, nil)
				e.do("POST", "/api/rooms/"+rooms[i].ID+"/leave", u.token, nil).expect(t, 204, nil)
				want[rooms[i].ID] = append(want[rooms[i].ID],
					fmt.Sprintf("member_joined:%d:%s:member", u.id, u.name), fmt.Sprintf("member_left:%d:%s", u.id, u.name))
			}
		}
	}
	check := func(phase string) []loggedEvent {
		t.Helper()
		e.drained()
		logged := log.snapshot()
		got := map[string][]string{}
		for _, l := range logged {
			room := fmt.Sprint(l.event.RoomID)
			got[room] = append(got[room], eventsString([]*events.Event{&l.event}, room)...)
		}
		for _, r := range rooms {
			if !slices.Equal(got[r.ID], want[r.ID]) {
				t.Fatalf("%s: room %s events\n got %v\nwant %v", phase, r.ID, got[r.ID], want[r.ID])
			}
		}
		return logged
	}

	churn(4)
	logged := check("both running")
	active := logged[0].instance
	for _, l := range logged {
		if l.instance != active {
			t.Fatalf("both instances relayed: %s and %s", active, l.instance)
		}
	}

	// Stop the relaying instance; the other takes the lock and relays what
	// comes next.
	survivor := url2
	if active == "one" {
		stop1()
	} else {
		stop2()
		survivor = url1
	}
	urls = []string{survivor}
	before := len(logged)
	churn(2)
	logged = check("after failover")
	for _, l := range logged[before:] {
		if l.instance == active {
			t.Fatalf("the stopped instance %s relayed", active)
		}
	}
}

// pendingGauge reads api_outbox_pending from /metrics; -1 when absent.
func (e *apiEnv) pendingGauge() int {
	e.t.Helper()
	res, err := http.Get(e.url + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^api_outbox_pending (\d+)`).FindSubmatch(b)
	if m == nil {
		return -1
	}
	var n int
	fmt.Sscan(string(m[1]), &n)
	return n
}
