package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// shownTags are the attributes printed after a span's name, in this order:
// where the message went and what happened to it.
var shownTags = []string{
	"messaging.message.id", "messaging.destination.partition.id", "messaging.kafka.offset",
	"messaging.consumer.group.name", "messaging.batch.message_count", "relay.recipients",
	"relay.room.id", "db.system.name", "db.system", "http.route", "http.status_code", "error",
}

// render prints tr as a tree: children under their parent by start time;
// spans whose parent is not in the trace are roots.
func render(w io.Writer, tr *Trace) {
	byID := map[string]*Span{}
	for i := range tr.Spans {
		byID[tr.Spans[i].SpanID] = &tr.Spans[i]
	}
	children := map[string][]*Span{}
	var roots []*Span
	var start int64
	for i := range tr.Spans {
		s := &tr.Spans[i]
		if start == 0 || s.StartTime < start {
			start = s.StartTime
		}
		if p := parentOf(s); p != "" && byID[p] != nil {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	byStart := func(a, b *Span) int { return int(a.StartTime - b.StartTime) }
	slices.SortFunc(roots, byStart)
	fmt.Fprintf(w, "trace %s (%d spans)\n", tr.TraceID, len(tr.Spans))
	var walk func(s *Span, depth int)
	walk = func(s *Span, depth int) {
		indent := strings.Repeat("  ", depth)
		fmt.Fprintf(w, "%s+%s %s  %s %s %q%s\n", indent, padRight(us(s.StartTime-start), 9), padLeft(us(s.Duration), 9),
			tr.process(s), kind(s), s.OperationName, tags(s))
		for _, l := range s.Logs {
			fmt.Fprintf(w, "%s    event %q at +%s\n", indent, logName(l), us(l.Timestamp-start))
		}
		for _, r := range s.References {
			if r.RefType == "FOLLOWS_FROM" {
				where := "this trace"
				if r.TraceID != tr.TraceID {
					where = "trace " + r.TraceID
				}
				fmt.Fprintf(w, "%s    link -> span %s in %s\n", indent, r.SpanID, where)
			}
		}
		kids := children[s.SpanID]
		slices.SortFunc(kids, byStart)
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
}

func parentOf(s *Span) string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" && r.TraceID == s.TraceID {
			return r.SpanID
		}
	}
	return ""
}

func (tr *Trace) process(s *Span) string {
	p := tr.Processes[s.ProcessID]
	for _, t := range p.Tags {
		if t.Key == "service.instance.id" {
			return fmt.Sprintf("%s/%v", p.ServiceName, t.Value)
		}
	}
	return p.ServiceName
}

func kind(s *Span) string {
	for _, t := range s.Tags {
		if t.Key == "span.kind" {
			return strings.ToUpper(fmt.Sprint(t.Value))
		}
	}
	return "INTERNAL"
}

func tags(s *Span) string {
	var b strings.Builder
	for _, k := range shownTags {
		for _, t := range s.Tags {
			if t.Key == k {
				fmt.Fprintf(&b, " %s=%v", k, t.Value)
			}
		}
	}
	return b.String()
}

func logName(l Log) string {
	for _, f := range l.Fields {
		if f.Key == "event" {
			return fmt.Sprint(f.Value)
		}
	}
	return "event"
}

// us formats microseconds.
func us(v int64) string {
	return (time.Duration(v) * time.Microsecond).String()
}

// padRight and padLeft pad to n runes (durations print µ).
func padRight(s string, n int) string {
	return s + strings.Repeat(" ", max(n-utf8.RuneCountInString(s), 0))
}

func padLeft(s string, n int) string {
	return strings.Repeat(" ", max(n-utf8.RuneCountInString(s), 0)) + s
}
