// tuya-fleet patch (infra/devstack/src/fleet_devstack/ferretdb_patch.py): sjson in one pass.
//
// sjson is the SQLite backend's document text (and how the PostgreSQL backend reads its jsonb). FerretDB's
// Unmarshal runs a json.Decoder per field and decodes each nested object again at every level; its Marshal
// runs json.Marshal on every key and scalar and builds a buffer per value. The patched Unmarshal and Marshal
// try fleetUnmarshal and fleetMarshal first, which return exactly what FerretDB's code (ferretUnmarshal,
// ferretMarshal) returns, document for document and byte for byte, or decline; then FerretDB's code runs as
// before. fleet_fast_test.go holds them to that on generated documents of every type and mutated texts.
//
// This folder's name starts with "_", so Go ignores it in infra/ferretdb: the files are copied into
// FerretDB's module (internal/handler/sjson) when it is built.

package sjson

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/must"
)

// fleetMaxDepth: deeper texts are left to FerretDB's decoder (encoding/json refuses beyond 10,000 levels).
const fleetMaxDepth = 200

// fleetUnmarshal is Unmarshal in one pass over the text; ok is false for anything it does not decode exactly
// as Unmarshal does (duplicate keys, invalid UTF-8, surrogate escapes, schema fields spelled otherwise than
// Marshal spells them, any text Unmarshal refuses or might read otherwise), which Unmarshal then decodes.
func fleetUnmarshal(data []byte) (*types.Document, bool) {
	if len(data) == 0 || data[0] != '{' {
		return nil, false
	}
	p := fleetParser{data: data}
	root, ok := p.value(0)
	if !ok || p.pos != len(data) { // Unmarshal refuses any trailing bytes, whitespace too
		return nil, false
	}
	var sch *fleetSchema
	fields := 0
	for i := range root.keys {
		if root.keys[i] == "$s" {
			if sch, ok = fleetSchemaOf(&root.values[i]); !ok {
				return nil, false
			}
			continue
		}
		fields++
	}
	if sch == nil || len(sch.keys) != fields {
		return nil, false
	}
	return fleetDocument(&root, sch, true)
}

// fleetNode is a parsed JSON value: an object (keys and values in order), an array, a string (unquoted), a
// number (its literal, a slice of the text), true, false or null.
type fleetNode struct {
	kind   byte // '{', '[', '"', '0', 't', 'f', 'n'
	text   string
	number []byte
	keys   []string
	values []fleetNode
	index  map[string]int // of keys, in objects of more than fleetScanKeys keys
}

// fleetScanKeys: up to this many keys an object's keys are searched one by one, beyond it through a map.
const fleetScanKeys = 16

func (n *fleetNode) find(key string) int {
	if n.index != nil {
		if i, ok := n.index[key]; ok {
			return i
		}
		return -1
	}
	return slices.Index(n.keys, key)
}

func (n *fleetNode) add(key string, v fleetNode) bool {
	if n.find(key) >= 0 { // a repeated key: json keeps the last one; leave that to it
		return false
	}
	if len(n.keys) == fleetScanKeys {
		n.index = make(map[string]int, 2*fleetScanKeys)
		for i, k := range n.keys {
			n.index[k] = i
		}
	}
	if n.index != nil {
		n.index[key] = len(n.keys)
	}
	n.keys, n.values = append(n.keys, key), append(n.values, v)
	return true
}

func (n *fleetNode) get(key string) (*fleetNode, bool) {
	if i := n.find(key); i >= 0 {
		return &n.values[i], true
	}
	return nil, false
}

type fleetParser struct {
	data []byte
	pos  int
}

func (p *fleetParser) space() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// value reads one JSON value (RFC 8259, as encoding/json's scanner checks it).
func (p *fleetParser) value(depth int) (fleetNode, bool) {
	p.space()
	if p.pos >= len(p.data) || depth > fleetMaxDepth {
		return fleetNode{}, false
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		p.pos++
		n := fleetNode{kind: '{'}
		if p.empty('}') {
			return n, true
		}
		for {
			p.space()
			key, ok := p.str()
			if !ok {
				return n, false
			}
			p.space()
			if p.pos >= len(p.data) || p.data[p.pos] != ':' {
				return n, false
			}
			p.pos++
			v, ok := p.value(depth + 1)
			if !ok || !n.add(key, v) {
				return n, false
			}
			if done, ok := p.separator('}'); done || !ok {
				return n, ok
			}
		}
	case c == '[':
		p.pos++
		n := fleetNode{kind: '['}
		if p.empty(']') {
			return n, true
		}
		for {
			v, ok := p.value(depth + 1)
			if !ok {
				return n, false
			}
			n.values = append(n.values, v)
			if done, ok := p.separator(']'); done || !ok {
				return n, ok
			}
		}
	case c == '"':
		s, ok := p.str()
		return fleetNode{kind: '"', text: s}, ok
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.pos
		if !p.number() {
			return fleetNode{}, false
		}
		return fleetNode{kind: '0', number: p.data[start:p.pos]}, true
	default:
		for _, lit := range [...]string{"true", "false", "null"} {
			if bytes.HasPrefix(p.data[p.pos:], []byte(lit)) {
				p.pos += len(lit)
				return fleetNode{kind: lit[0]}, true
			}
		}
		return fleetNode{}, false
	}
}

// empty reads the closing bracket of an empty object or array, if it is next.
func (p *fleetParser) empty(closing byte) bool {
	p.space()
	if p.pos < len(p.data) && p.data[p.pos] == closing {
		p.pos++
		return true
	}
	return false
}

// separator reads what follows a member of an object or an array: a comma (more follow) or the closing
// bracket (done); ok is false for anything else.
func (p *fleetParser) separator(closing byte) (done, ok bool) {
	p.space()
	if p.pos >= len(p.data) {
		return false, false
	}
	p.pos++
	switch p.data[p.pos-1] {
	case ',':
		return false, true
	case closing:
		return true, true
	}
	return false, false
}

// str reads a string as encoding/json unquotes it; ok is false for invalid UTF-8 (json replaces it), `\u`
// escapes of UTF-16 surrogates (json pairs them or replaces them), control characters and malformed escapes
// (json refuses those).
func (p *fleetParser) str() (string, bool) {
	d := p.data
	if p.pos >= len(d) || d[p.pos] != '"' {
		return "", false
	}
	start := p.pos + 1
	for i := start; i < len(d); i++ {
		switch c := d[i]; {
		case c == '"':
			s := d[start:i]
			if !utf8.Valid(s) {
				return "", false
			}
			p.pos = i + 1
			return string(s), true
		case c == '\\':
			return p.escaped(start, i)
		case c < 0x20:
			return "", false
		}
	}
	return "", false
}

// escaped continues str from the first backslash at i, decoding escapes into a buffer.
func (p *fleetParser) escaped(start, i int) (string, bool) {
	d := p.data
	out := make([]byte, 0, len(d)-start)
	out = append(out, d[start:i]...)
	for i < len(d) {
		c := d[i]
		switch {
		case c == '"':
			// escapes add whole runes only, so out is valid UTF-8 exactly when each unescaped run was
			if !utf8.Valid(out) {
				return "", false
			}
			p.pos = i + 1
			return string(out), true
		case c < 0x20:
			return "", false
		case c != '\\':
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(d) {
			return "", false
		}
		switch e := d[i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+6 > len(d) {
				return "", false
			}
			var r rune
			for _, h := range d[i+2 : i+6] {
				switch {
				case h >= '0' && h <= '9':
					r = r<<4 | rune(h-'0')
				case h >= 'a' && h <= 'f':
					r = r<<4 | rune(h-'a'+10)
				case h >= 'A' && h <= 'F':
					r = r<<4 | rune(h-'A'+10)
				default:
					return "", false
				}
			}
			if utf16.IsSurrogate(r) {
				return "", false
			}
			out = utf8.AppendRune(out, r)
			i += 6
			continue
		default:
			return "", false
		}
		i += 2
	}
	return "", false
}

// number reads a JSON number (RFC 8259's grammar, as encoding/json's scanner checks it).
func (p *fleetParser) number() bool {
	d, i := p.data, p.pos
	digits := func() bool {
		start := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		return i > start
	}
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case !digits():
		return false
	}
	if i < len(d) && d[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	p.pos = i
	return true
}

// fleetSchema and fleetElem are schema and elem as parsed from the text.
type fleetSchema struct {
	keys  []string
	props map[string]*fleetElem
}

type fleetElem struct {
	t        string
	schema   *fleetSchema
	items    []*fleetElem
	hasItems bool
	options  *string
	subtype  *types.BinarySubtype
}

// fleetSchemaOf reads a schema: only the fields Marshal writes, spelled as Marshal spells them (json matches
// struct fields case-insensitively and takes null for any: leave such texts to it).
func fleetSchemaOf(n *fleetNode) (*fleetSchema, bool) {
	if n.kind != '{' {
		return nil, false
	}
	s := &fleetSchema{}
	for i, key := range n.keys {
		v := &n.values[i]
		switch {
		case key == "p" && v.kind == '{':
			s.props = make(map[string]*fleetElem, len(v.keys))
			for j, name := range v.keys {
				e, ok := fleetElemOf(&v.values[j])
				if !ok {
					return nil, false
				}
				s.props[name] = e
			}
		case key == "$k" && v.kind == '[':
			s.keys = make([]string, len(v.values))
			for j := range v.values {
				if v.values[j].kind != '"' {
					return nil, false
				}
				s.keys[j] = v.values[j].text
			}
		default:
			return nil, false
		}
	}
	return s, true
}

// fleetElemOf reads an elem. Every field is checked as json would decode it, also where the value does not
// use it (json fails the whole schema on a bad field anywhere).
func fleetElemOf(n *fleetNode) (*fleetElem, bool) {
	if n.kind != '{' {
		return nil, false
	}
	e := &fleetElem{}
	for i, key := range n.keys {
		v := &n.values[i]
		ok := false
		switch {
		case key == "t" && v.kind == '"':
			e.t, ok = v.text, true
		case key == "$s":
			e.schema, ok = fleetSchemaOf(v)
		case key == "o" && v.kind == '"':
			options := v.text
			e.options, ok = &options, true
		case key == "s" && v.kind == '0':
			subtype, err := strconv.ParseUint(string(v.number), 10, 8)
			s := types.BinarySubtype(subtype)
			e.subtype, ok = &s, err == nil
		case key == "i" && v.kind == '[':
			e.hasItems, ok = true, true
			e.items = make([]*fleetElem, len(v.values))
			for j := range v.values {
				if e.items[j], ok = fleetElemOf(&v.values[j]); !ok {
					break
				}
			}
		}
		if !ok {
			return nil, false
		}
	}
	return e, true
}

// fleetDocument is Unmarshal's (and documentType's) loop: the schema's keys in order.
func fleetDocument(n *fleetNode, sch *fleetSchema, top bool) (*types.Document, bool) {
	d := types.MakeDocument(len(sch.keys))
	for _, key := range sch.keys {
		v, found := n.get(key)
		if !found || (top && key == "$s") { // Unmarshal removes the top level's `$s` before it looks
			return nil, false
		}
		value, ok := fleetValue(v, sch.props[key])
		if !ok {
			return nil, false
		}
		d.Set(key, value)
	}
	return d, true
}

// fleetValue is unmarshalSingleValue's result.
func fleetValue(n *fleetNode, e *fleetElem) (any, bool) {
	if n.kind == 'n' {
		return types.Null, true
	}
	if e == nil {
		return nil, false
	}
	switch e.t {
	case "object":
		if e.schema == nil || n.kind != '{' {
			return nil, false
		}
		if len(n.keys) == 0 {
			return new(types.Document), true
		}
		if len(e.schema.keys) != len(n.keys) {
			return nil, false
		}
		return fleetDocument(n, e.schema, false)
	case "array":
		if !e.hasItems || n.kind != '[' || len(e.items) != len(n.values) {
			return nil, false
		}
		a := types.MakeArray(len(n.values))
		for i := range n.values {
			v, ok := fleetValue(&n.values[i], e.items[i])
			if !ok {
				return nil, false
			}
			a.Append(v)
		}
		return a, true
	case "string":
		return n.text, n.kind == '"'
	case "binData": // json's []byte: standard base64, decoded as json decodes it
		if n.kind != '"' || e.subtype == nil {
			return nil, false
		}
		b := make([]byte, base64.StdEncoding.DecodedLen(len(n.text)))
		size, err := base64.StdEncoding.Decode(b, []byte(n.text))
		return types.Binary{B: b[:size], Subtype: *e.subtype}, err == nil
	case "objectId":
		var id types.ObjectID
		if n.kind != '"' || len(n.text) != 2*len(id) {
			return nil, false
		}
		if _, err := hex.Decode(id[:], []byte(n.text)); err != nil {
			return nil, false
		}
		return id, true
	case "bool":
		return n.kind == 't', n.kind == 't' || n.kind == 'f'
	case "date":
		if n.kind != '0' {
			return nil, false
		}
		ms, err := strconv.ParseInt(string(n.number), 10, 64)
		return time.UnixMilli(ms), err == nil
	case "regex":
		if n.kind != '"' || e.options == nil {
			return nil, false
		}
		return types.Regex{Pattern: n.text, Options: *e.options}, true
	case "double":
		if n.kind != '0' {
			return nil, false
		}
		f, err := strconv.ParseFloat(string(n.number), 64)
		return f, err == nil
	case "int":
		if n.kind != '0' {
			return nil, false
		}
		i, err := strconv.ParseInt(string(n.number), 10, 32)
		return int32(i), err == nil
	case "timestamp":
		if n.kind != '0' {
			return nil, false
		}
		ts, err := strconv.ParseUint(string(n.number), 10, 64)
		return types.Timestamp(ts), err == nil
	case "long":
		if n.kind != '0' {
			return nil, false
		}
		i, err := strconv.ParseInt(string(n.number), 10, 64)
		return i, err == nil
	}
	return nil, false
}

// fleetMarshal is Marshal's text, byte for byte, written into one buffer. Doubles, binData and regex values
// go through FerretDB's own code; ok is false on any error, and Marshal then runs as before (and fails as
// before: json refuses NaN and infinities).
func fleetMarshal(d *types.Document) ([]byte, bool) {
	buf := make([]byte, 0, 1024)
	buf = append(buf, `{"$s":`...)
	buf, ok := fleetAppendSchema(buf, d)
	if !ok {
		return nil, false
	}
	keys, values := d.Keys(), d.Values()
	for i, key := range keys {
		buf = append(buf, `,"`...)
		buf = append(buf, key...) // sic: Marshal writes top-level keys unescaped
		buf = append(buf, `":`...)
		if buf, ok = fleetAppendValue(buf, values[i]); !ok {
			return nil, false
		}
	}
	return append(buf, '}'), true
}

// fleetAppendSchema appends marshalSchemaForDoc's text.
func fleetAppendSchema(buf []byte, d *types.Document) ([]byte, bool) {
	keys := d.Keys()
	if len(keys) == 0 {
		return append(buf, `{}`...), true
	}
	buf = append(buf, `{"p":{`...)
	var ok bool
	for i, key := range keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		if buf, ok = fleetAppendString(buf, key); !ok {
			return nil, false
		}
		buf = append(buf, ':')
		if buf, ok = fleetAppendElem(buf, must.NotFail(d.Get(key))); !ok {
			return nil, false
		}
	}
	buf = append(buf, `},"$k":[`...)
	for i, key := range keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		if buf, ok = fleetAppendString(buf, key); !ok {
			return nil, false
		}
	}
	return append(buf, `]}`...), true
}

// fleetAppendElem appends marshalElemForSingleValue's text.
func fleetAppendElem(buf []byte, value any) ([]byte, bool) {
	var ok bool
	switch v := value.(type) {
	case *types.Document:
		buf = append(buf, `{"t":"object","$s":`...)
		if buf, ok = fleetAppendSchema(buf, v); !ok {
			return nil, false
		}
		return append(buf, '}'), true
	case *types.Array:
		buf = append(buf, `{"t":"array","i":[`...)
		for i := 0; i < v.Len(); i++ {
			if i > 0 {
				buf = append(buf, ',')
			}
			if buf, ok = fleetAppendElem(buf, must.NotFail(v.Get(i))); !ok {
				return nil, false
			}
		}
		return append(buf, `]}`...), true
	case float64:
		return append(buf, `{"t":"double"}`...), true
	case string:
		return append(buf, `{"t":"string"}`...), true
	case types.ObjectID:
		return append(buf, `{"t":"objectId"}`...), true
	case bool:
		return append(buf, `{"t":"bool"}`...), true
	case time.Time:
		return append(buf, `{"t":"date"}`...), true
	case types.NullType:
		return append(buf, `{"t":"null"}`...), true
	case int32:
		return append(buf, `{"t":"int"}`...), true
	case types.Timestamp:
		return append(buf, `{"t":"timestamp"}`...), true
	case int64:
		return append(buf, `{"t":"long"}`...), true
	}
	b, err := marshalElemForSingleValue(value) // binData, regex (and it panics on unknown types, as before)
	return append(buf, b...), err == nil
}

// fleetAppendValue appends MarshalSingleValue's text.
func fleetAppendValue(buf []byte, value any) ([]byte, bool) {
	var ok bool
	switch v := value.(type) {
	case *types.Document: // documentType.MarshalJSON
		buf = append(buf, '{')
		for i, key := range v.Keys() {
			if i > 0 {
				buf = append(buf, ',')
			}
			if buf, ok = fleetAppendString(buf, key); !ok {
				return nil, false
			}
			buf = append(buf, ':')
			if buf, ok = fleetAppendValue(buf, must.NotFail(v.Get(key))); !ok {
				return nil, false
			}
		}
		return append(buf, '}'), true
	case *types.Array:
		buf = append(buf, '[')
		for i := 0; i < v.Len(); i++ {
			if i > 0 {
				buf = append(buf, ',')
			}
			if buf, ok = fleetAppendValue(buf, must.NotFail(v.Get(i))); !ok {
				return nil, false
			}
		}
		return append(buf, ']'), true
	case string:
		return fleetAppendString(buf, v)
	case types.ObjectID:
		buf = append(buf, '"')
		buf = hex.AppendEncode(buf, v[:])
		return append(buf, '"'), true
	case bool:
		return strconv.AppendBool(buf, v), true
	case time.Time:
		return strconv.AppendInt(buf, v.UnixMilli(), 10), true
	case types.NullType:
		return append(buf, `null`...), true
	case int32:
		return strconv.AppendInt(buf, int64(v), 10), true
	case int64:
		return strconv.AppendInt(buf, v, 10), true
	case types.Timestamp:
		return strconv.AppendUint(buf, uint64(v), 10), true
	}
	b, err := MarshalSingleValue(value) // doubles (json's float format), binData, regex
	return append(buf, b...), err == nil
}

// fleetAppendString appends json.Marshal's text of a string: quoted as is when json escapes nothing in it
// (valid UTF-8 without control characters, `"`, `\`, `<`, `>`, `&` (escaped for HTML), U+2028 and U+2029),
// else json.Marshal's own text.
func fleetAppendString(buf []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return fleetAppendJSON(buf, s)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
			return fleetAppendJSON(buf, s)
		}
		i += size
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"'), true
}

func fleetAppendJSON(buf []byte, s string) ([]byte, bool) {
	b, err := json.Marshal(s)
	return append(buf, b...), err == nil
}
