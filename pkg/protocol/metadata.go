package protocol

import (
	"encoding/json"
	"math"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"relay/pkg/chat"
)

// CheckMetadata reports why a message's metadata object must not be
// accepted: PostgreSQL's jsonb would refuse it (so the persister could never
// store a message the gateway acked), or a URL in it is not http(s). The
// error is a BAD_REQUEST naming the field ("metadata.links[1].url"). The
// caller has already checked that raw is an object within
// chat.MaxMetadataBytes.
func CheckMetadata(raw []byte) error {
	if err := CheckJSONB(raw, "metadata"); err != nil {
		return err
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return chat.Errorf(chat.CodeBadRequest, "metadata is not valid JSON")
	}
	return checkURLs(v, "metadata", false)
}

// CheckJSONB reports whether PostgreSQL's jsonb input accepts raw as a JSON
// text, and if not, why, as a BAD_REQUEST naming the field under name. It
// follows PostgreSQL 15's json lexer and numeric_in (the property test in
// metadata_pg_test.go holds the two together):
//   - the text is valid UTF-8 and valid JSON (RFC 8259);
//   - a string has no \u0000 escape and no unpaired UTF-16 surrogate escape;
//   - a number fits the numeric type: at most 16383 digits after the
//     decimal point (counting the digits written and the exponent), a
//     weight of at most 32767 base-10000 digits before it, and an exponent
//     below 2^30 in magnitude.
func CheckJSONB(raw []byte, name string) error {
	if !utf8.Valid(raw) {
		return chat.Errorf(chat.CodeBadRequest, "%s is not valid UTF-8", name)
	}
	p := jsonbParser{b: raw}
	p.space()
	if err := p.value(name, 0); err != nil {
		return err
	}
	p.space()
	if p.i != len(p.b) {
		return chat.Errorf(chat.CodeBadRequest, "%s is not valid JSON", name)
	}
	return nil
}

// maxJSONDepth bounds nesting as encoding/json does; PostgreSQL's own
// bound (max_stack_depth) is far beyond what a 2 KiB object can reach.
const maxJSONDepth = 10000

type jsonbParser struct {
	b []byte
	i int
}

func (p *jsonbParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonbParser) invalid(path string) error {
	return chat.Errorf(chat.CodeBadRequest, "%s is not valid JSON", path)
}

func (p *jsonbParser) value(path string, depth int) error {
	if p.i >= len(p.b) {
		return p.invalid(path)
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object(path, depth+1)
	case c == '[':
		return p.array(path, depth+1)
	case c == '"':
		_, err := p.str(path)
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number(path)
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if strings.HasPrefix(string(p.b[p.i:min(len(p.b), p.i+len(lit))]), lit) {
				p.i += len(lit)
				return nil
			}
		}
		return p.invalid(path)
	}
}

func (p *jsonbParser) object(path string, depth int) error {
	if depth > maxJSONDepth {
		return chat.Errorf(chat.CodeBadRequest, "%s is nested too deeply", path)
	}
	p.i++ // {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return nil
	}
	for {
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return p.invalid(path)
		}
		key, err := p.str(path)
		if err != nil {
			return err
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return p.invalid(path)
		}
		p.i++
		p.space()
		if err := p.value(path+"."+key, depth); err != nil {
			return err
		}
		if done, err := p.separator('}', path); done || err != nil {
			return err
		}
	}
}

// separator reads what follows a member or element: a comma (another one
// comes; false) or the container's closing byte (true).
func (p *jsonbParser) separator(closing byte, path string) (bool, error) {
	p.space()
	if p.i >= len(p.b) {
		return false, p.invalid(path)
	}
	switch p.b[p.i] {
	case ',':
		p.i++
		return false, nil
	case closing:
		p.i++
		return true, nil
	default:
		return false, p.invalid(path)
	}
}

func (p *jsonbParser) array(path string, depth int) error {
	if depth > maxJSONDepth {
		return chat.Errorf(chat.CodeBadRequest, "%s is nested too deeply", path)
	}
	p.i++ // [
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return nil
	}
	for n := 0; ; n++ {
		p.space()
		if err := p.value(path+"["+strconv.Itoa(n)+"]", depth); err != nil {
			return err
		}
		if done, err := p.separator(']', path); done || err != nil {
			return err
		}
	}
}

// str consumes a string and returns its raw text (escapes kept, for
// naming a key in an error; truncated to stay readable).
func (p *jsonbParser) str(path string) (string, error) {
	start := p.i + 1
	p.i++ // "
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := string(p.b[start:p.i])
			p.i++
			if len(s) > 64 {
				s = s[:64] + "…"
			}
			return s, nil
		case c < 0x20:
			return "", chat.Errorf(chat.CodeBadRequest, "%s has a control character in a string", path)
		case c == '\\':
			if p.i+1 >= len(p.b) {
				return "", p.invalid(path)
			}
			switch p.b[p.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i += 2
			case 'u':
				r, ok := p.hex4(p.i + 2)
				if !ok {
					return "", p.invalid(path)
				}
				p.i += 6
				switch {
				case r == 0:
					return "", chat.Errorf(chat.CodeBadRequest, "%s must not contain NUL characters (\\u0000)", path)
				case r >= 0xDC00 && r <= 0xDFFF:
					return "", chat.Errorf(chat.CodeBadRequest, "%s has an unpaired UTF-16 surrogate escape", path)
				case r >= 0xD800 && r <= 0xDBFF:
					// A high surrogate must be followed by \u and a low one.
					lo, ok := rune(0), false
					if p.i+1 < len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
						lo, ok = p.hex4(p.i + 2)
					}
					if !ok || lo < 0xDC00 || lo > 0xDFFF {
						return "", chat.Errorf(chat.CodeBadRequest, "%s has an unpaired UTF-16 surrogate escape", path)
					}
					p.i += 6
				}
			default:
				return "", p.invalid(path)
			}
		default:
			p.i++
		}
	}
	return "", p.invalid(path)
}

func (p *jsonbParser) hex4(at int) (rune, bool) {
	if at+4 > len(p.b) {
		return 0, false
	}
	var r rune
	for _, c := range p.b[at : at+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c-'a') + 10
		case c >= 'A' && c <= 'F':
			r |= rune(c-'A') + 10
		default:
			return 0, false
		}
	}
	return r, true
}

// PostgreSQL numeric limits (src/include/utils/numeric.h, numeric.c).
const (
	pgDecDigits     = 4     // decimal digits per base-10000 digit
	pgWeightMax     = 32767 // int16 weight of the first base-10000 digit
	pgWeightMin     = -32768
	pgDScaleMax     = 16383             // digits after the decimal point
	pgExponentLimit = math.MaxInt32 / 2 // numeric_in refuses |exponent| >= this
)

// number consumes a JSON number and checks it as numeric_in would.
func (p *jsonbParser) number(path string) error {
	b := p.b
	if b[p.i] == '-' {
		p.i++
	}
	intStart := p.i
	switch {
	case p.i < len(b) && b[p.i] == '0':
		p.i++
	case p.i < len(b) && b[p.i] >= '1' && b[p.i] <= '9':
		for p.i < len(b) && b[p.i] >= '0' && b[p.i] <= '9' {
			p.i++
		}
	default:
		return p.invalid(path)
	}
	intDigits := b[intStart:p.i]
	var fracDigits []byte
	if p.i < len(b) && b[p.i] == '.' {
		p.i++
		start := p.i
		for p.i < len(b) && b[p.i] >= '0' && b[p.i] <= '9' {
			p.i++
		}
		if p.i == start {
			return p.invalid(path)
		}
		fracDigits = b[start:p.i]
	}
	var exponent int64
	if p.i < len(b) && (b[p.i] == 'e' || b[p.i] == 'E') {
		p.i++
		neg := false
		if p.i < len(b) && (b[p.i] == '+' || b[p.i] == '-') {
			neg = b[p.i] == '-'
			p.i++
		}
		start := p.i
		for p.i < len(b) && b[p.i] >= '0' && b[p.i] <= '9' {
			// Saturate as strtol does; anything this large is refused anyway.
			if exponent < pgExponentLimit {
				exponent = exponent*10 + int64(b[p.i]-'0')
			}
			p.i++
		}
		if p.i == start {
			return p.invalid(path)
		}
		if neg {
			exponent = -exponent
		}
	}
	if !numericFits(intDigits, fracDigits, exponent) {
		return chat.Errorf(chat.CodeBadRequest, "%s has a number out of PostgreSQL's numeric range", path)
	}
	return nil
}

// numericFits follows numeric.c's set_var_from_str and make_result: the
// decimal weight and scale are derived from the digits as written, moved
// by the exponent, converted to base 10000 with leading zero digits
// stripped, and must fit the stored int16 weight and 14-bit scale.
func numericFits(intDigits, fracDigits []byte, exponent int64) bool {
	if exponent >= pgExponentLimit || exponent <= -pgExponentLimit {
		return false
	}
	dweight := int64(len(intDigits)) - 1
	dscale := int64(len(fracDigits)) - exponent
	dweight += exponent
	if dscale < 0 {
		dscale = 0
	}
	if dscale > pgDScaleMax {
		return false
	}
	// Index of the first non-zero digit among all digits written.
	lead, nonzero := 0, false
	for _, d := range [][]byte{intDigits, fracDigits} {
		for _, c := range d {
			if c != '0' {
				nonzero = true
				break
			}
			lead++
		}
		if nonzero {
			break
		}
	}
	if !nonzero {
		return true // zero: weight 0 whatever the exponent
	}
	var weight int64
	if dweight >= 0 {
		weight = (dweight+1+pgDecDigits-1)/pgDecDigits - 1
	} else {
		weight = -((-dweight-1)/pgDecDigits + 1)
	}
	offset := (weight+1)*pgDecDigits - (dweight + 1)
	weight -= (offset + int64(lead)) / pgDecDigits // leading zero base-10000 digits
	return weight >= pgWeightMin && weight <= pgWeightMax
}

// isURLKey says whether a metadata key names a URL: url, href, src, or a
// name ending in url/uri (imageUrl, thumbnail_url, avatarURI).
func isURLKey(key string) bool {
	k := strings.ToLower(key)
	return k == "href" || k == "src" || strings.HasSuffix(k, "url") || strings.HasSuffix(k, "uri")
}

// checkURLs walks a decoded metadata value: every string under a URL key
// must be an absolute http or https URL with a host, so a client that
// renders it as a link or an image source cannot be handed javascript:,
// data: or file: URLs.
func checkURLs(v any, path string, urlKey bool) error {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if err := checkURLs(e, path+"."+k, isURLKey(k)); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range x {
			if err := checkURLs(e, path+"["+strconv.Itoa(i)+"]", urlKey); err != nil {
				return err
			}
		}
	case string:
		if urlKey && !IsHTTPURL(x) && !IsUploadPath(x) {
			return chat.Errorf(chat.CodeBadRequest, "%s must be an absolute http or https URL or an upload's /api/uploads/<id>", path)
		}
	}
	return nil
}

// UploadPathPrefix is where the api serves uploaded files; a file or image
// message's metadata points there (docs/protocol.md).
const UploadPathPrefix = "/api/uploads/"

// IsUploadPath reports whether s is the path of one of Relay's own uploads,
// /api/uploads/<id> with a base64url id: same-origin, so a client resolves
// it against the api it talks to, and nothing else (no "..", no query, no
// second slash) can ride along.
func IsUploadPath(s string) bool {
	id, ok := strings.CutPrefix(s, UploadPathPrefix)
	if !ok || id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// IsHTTPURL reports whether s is an absolute http(s) URL with a host and
// nothing a browser would strip or reinterpret (no leading or embedded
// whitespace or control characters, no credentials).
func IsHTTPURL(s string) bool {
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil {
		return false
	}
	scheme := strings.ToLower(u.Scheme)
	return scheme == "http" || scheme == "https"
}
