package testenv

import (
	"bytes"
	"compress/gzip"
	"testing"
)

// Gzip returns b gzipped; the edge tests nest it to build decompression
// bombs that are a few hundred bytes on the wire.
func Gzip(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
