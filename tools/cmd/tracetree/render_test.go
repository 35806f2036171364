package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// A trace as Jaeger returns it: a receive span with a producer child whose
// consumer has a link to a batch in another trace.
const fixture = `{"traceID":"t1","processes":{"p1":{"serviceName":"gateway","tags":[{"key":"service.instance.id","value":"gateway-2"}]},"p2":{"serviceName":"persister","tags":[]}},
"spans":[
 {"traceID":"t1","spanID":"c","operationName":"persist chat.messages","references":[{"refType":"CHILD_OF","traceID":"t1","spanID":"b"},{"refType":"FOLLOWS_FROM","traceID":"t9","spanID":"z"}],"startTime":1000300,"duration":50000,"processID":"p2","tags":[{"key":"span.kind","value":"consumer"}],"logs":[{"timestamp":1050300,"fields":[{"key":"event","value":"committed"}]}]},
 {"traceID":"t1","spanID":"a","operationName":"gateway.send_message","references":[],"startTime":1000000,"duration":2000,"processID":"p1","tags":[{"key":"span.kind","value":"server"}]},
 {"traceID":"t1","spanID":"b","operationName":"send chat.messages","references":[{"refType":"CHILD_OF","traceID":"t1","spanID":"a"}],"startTime":1000100,"duration":1500,"processID":"p1","tags":[{"key":"span.kind","value":"producer"},{"key":"messaging.kafka.offset","value":42}]}
]}`

func TestRender(t *testing.T) {
	var tr Trace
	if err := json.Unmarshal([]byte(fixture), &tr); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	render(&b, &tr)
	want := `trace t1 (3 spans)
+0s              2ms  gateway/gateway-2 SERVER "gateway.send_message"
  +100µs         1.5ms  gateway/gateway-2 PRODUCER "send chat.messages" messaging.kafka.offset=42
    +300µs          50ms  persister CONSUMER "persist chat.messages"
        event "committed" at +50.3ms
        link -> span z in trace t9
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}
