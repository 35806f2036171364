package protocol_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"relay/pkg/protocol"
	"relay/pkg/testenv"
)

// jsonGen produces JSON-ish texts that stress what PostgreSQL's jsonb
// refuses: escapes (NUL, lone and paired surrogates), raw control
// characters and invalid UTF-8, numbers at and past numeric's limits, and
// grammar slips. Most outputs are valid JSON, many are not.
type jsonGen struct{ r *rand.Rand }

func (g jsonGen) value(depth int) string {
	switch n := g.r.IntN(10); {
	case n < 3:
		return g.number()
	case n < 6:
		return g.str()
	case n < 7 && depth < 4:
		parts := make([]string, g.r.IntN(4))
		for i := range parts {
			parts[i] = g.str() + ":" + g.value(depth+1)
		}
		return "{" + strings.Join(parts, ",") + "}"
	case n < 8 && depth < 4:
		parts := make([]string, g.r.IntN(4))
		for i := range parts {
			parts[i] = g.value(depth + 1)
		}
		return "[" + strings.Join(parts, ",") + "]"
	default:
		return []string{"true", "false", "null", "tru", "nul"}[g.r.IntN(5)]
	}
}

func (g jsonGen) digits(max int) string {
	n := g.r.IntN(max + 1)
	var b strings.Builder
	for range n {
		if g.r.IntN(3) == 0 {
			b.WriteByte('0')
		} else {
			b.WriteByte(byte('0' + g.r.IntN(10)))
		}
	}
	return b.String()
}

func (g jsonGen) number() string {
	var b strings.Builder
	if g.r.IntN(3) == 0 {
		b.WriteByte('-')
	}
	intPart := g.digits(6)
	if intPart == "" && g.r.IntN(8) != 0 {
		intPart = "0"
	}
	b.WriteString(intPart)
	if g.r.IntN(2) == 0 {
		b.WriteByte('.')
		b.WriteString(g.digits(6))
	}
	if g.r.IntN(3) != 0 {
		b.WriteByte("eE"[g.r.IntN(2)])
		if g.r.IntN(2) == 0 {
			b.WriteByte("+-"[g.r.IntN(2)])
		}
		edges := []int64{0, 1, 9, 16380, 16383, 16384, 16387, 131068, 131071, 131072, 131075, 999999,
			1<<30 - 2, 1<<30 - 1, 1 << 30, 1<<31 - 1, 1 << 40}
		e := edges[g.r.IntN(len(edges))] + int64(g.r.IntN(5)) - 2
		if e < 0 {
			e = 0
		}
		if g.r.IntN(10) != 0 {
			b.WriteString(strconv.FormatInt(e, 10))
		}
	}
	return b.String()
}

func (g jsonGen) str() string {
	var b strings.Builder
	b.WriteByte('"')
	for range g.r.IntN(6) {
		switch g.r.IntN(12) {
		case 0:
			fmt.Fprintf(&b, `\u%04x`, []int{0, 1, 0x1f, 0x41, 0xe9, 0xd800, 0xdbff, 0xdc00, 0xdfff, 0xfffd, 0xffff}[g.r.IntN(11)])
		case 1:
			b.WriteString(`\ud83d\ude00`)
		case 2:
			b.WriteString([]string{`\n`, `\"`, `\\`, `\/`, `\x`, `\`, `\u12`, `\uZZZZ`}[g.r.IntN(8)])
		case 3:
			b.WriteByte(byte(g.r.IntN(0x20))) // a raw control character
		case 4:
			b.WriteString([]string{"\xff", "\xc3", "\xed\xa0\x80", "é", "𝄞", "\u2028"}[g.r.IntN(6)])
		default:
			b.WriteByte(byte('a' + g.r.IntN(26)))
		}
	}
	if g.r.IntN(20) != 0 {
		b.WriteByte('"')
	}
	return b.String()
}

// TestCheckJSONBAgreesWithPostgres is the property test of CheckJSONB:
// for thousands of generated texts, the check accepts exactly what
// PostgreSQL's jsonb input accepts. (A text with invalid UTF-8 never
// reaches jsonb: PostgreSQL refuses it as text, and so does the check.)
func TestCheckJSONBAgreesWithPostgres(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration test")
	}
	db, err := sql.Open("pgx", testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	seed := rand.Uint64()
	g := jsonGen{r: rand.New(rand.NewPCG(seed, 1))}
	n, accepted := 3000, 0
	if testing.Short() {
		n = 300
	}
	for i := range n {
		s := g.value(0)
		if i%3 == 0 { // also wrap in an object, as metadata is
			s = `{"k":` + s + `}`
		}
		var length int
		pgErr := conn.QueryRowContext(ctx, `SELECT length($1::text::jsonb::text)`, s).Scan(&length)
		checkErr := protocol.CheckJSONB([]byte(s), "metadata")
		if (pgErr == nil) != (checkErr == nil) {
			t.Fatalf("seed %d: %q: PostgreSQL says %v, CheckJSONB says %v", seed, s, pgErr, checkErr)
		}
		if pgErr == nil {
			accepted++
		}
	}
	// The generator must exercise both sides.
	if accepted < n/10 || accepted > n*9/10 {
		t.Fatalf("seed %d: %d of %d accepted: the generator is off balance", seed, accepted, n)
	}
	t.Logf("seed %d: %d of %d texts accepted by both", seed, accepted, n)
}
