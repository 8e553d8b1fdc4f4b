// tuya-fleet patch (infra/devstack/src/fleet_devstack/ferretdb_patch.py): the one-pass sjson of
// fleet_fast.go against FerretDB's own Marshal and Unmarshal (ferretMarshal, ferretUnmarshal), on the same
// documents and texts. The one-pass code must return what FerretDB's returns (the same bytes; documents
// equal in every field, doubles bit for bit) or decline; where FerretDB's fails or panics, it must decline
// (or panic the same way). Run by tests/integration/foundation/test_ferretdb_sjson.py.

package sjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/FerretDB/FerretDB/internal/types"
)

// fleetOutcome is what one codec did with an input: its result, its error, or its panic.
type fleetOutcome[T any] struct {
	value    T
	err      error
	panicked any
}

func fleetRun[T any](f func() (T, error)) (o fleetOutcome[T]) {
	defer func() {
		if r := recover(); r != nil {
			o.panicked = r
		}
	}()
	o.value, o.err = f()
	return o
}

func fleetRunFast[T any](f func() (T, bool)) (o fleetOutcome[T], ok bool) {
	defer func() {
		if r := recover(); r != nil {
			o.panicked, ok = r, false
		}
	}()
	o.value, ok = f()
	return o, ok
}

// fleetDiff is where two decoded values differ ("" if nowhere): the same Go types, keys in the same order,
// doubles with the same bits (reflect.DeepEqual takes -0 for 0), times at the same instant and location.
func fleetDiff(path string, a, b any) string {
	if reflect.TypeOf(a) != reflect.TypeOf(b) {
		return fmt.Sprintf("%s: %T != %T", path, a, b)
	}
	switch a := a.(type) {
	case *types.Document:
		b := b.(*types.Document)
		if !slices.Equal(a.Keys(), b.Keys()) {
			return fmt.Sprintf("%s: keys %q != %q", path, a.Keys(), b.Keys())
		}
		for i, v := range a.Values() {
			if d := fleetDiff(path+"."+a.Keys()[i], v, b.Values()[i]); d != "" {
				return d
			}
		}
	case *types.Array:
		b := b.(*types.Array)
		if a.Len() != b.Len() {
			return fmt.Sprintf("%s: %d != %d items", path, a.Len(), b.Len())
		}
		for i := 0; i < a.Len(); i++ {
			av, _ := a.Get(i)
			bv, _ := b.Get(i)
			if d := fleetDiff(fmt.Sprintf("%s[%d]", path, i), av, bv); d != "" {
				return d
			}
		}
	case float64:
		if math.Float64bits(a) != math.Float64bits(b.(float64)) {
			return fmt.Sprintf("%s: %v != %v", path, a, b)
		}
	case time.Time:
		b := b.(time.Time)
		if !a.Equal(b) || a.Location() != b.Location() {
			return fmt.Sprintf("%s: %v != %v", path, a, b)
		}
	case types.Binary:
		b := b.(types.Binary)
		if a.Subtype != b.Subtype || !bytes.Equal(a.B, b.B) || (a.B == nil) != (b.B == nil) {
			return fmt.Sprintf("%s: %v != %v", path, a, b)
		}
	default:
		if a != b {
			return fmt.Sprintf("%s: %#v != %#v", path, a, b)
		}
	}
	return ""
}

// fleetSame holds when two documents are equal as fleetDiff and reflect.DeepEqual (which also compares the
// documents' internals: key counts, frozen flags) both see it.
func fleetSame(a, b *types.Document) string {
	if d := fleetDiff("$", a, b); d != "" {
		return d
	}
	if !reflect.DeepEqual(a, b) {
		return fmt.Sprintf("not reflect.DeepEqual: %#v != %#v", a, b)
	}
	return ""
}

// fleetCounts tallies what the one-pass code did, so a test can tell it was used.
type fleetCounts struct{ accepted, declined, refusedByBoth int }

// fleetCheckUnmarshal compares the codecs on one text; t fails on any difference. It says whether the
// one-pass code took the text, and whether FerretDB's took it.
func fleetCheckUnmarshal(t *testing.T, what string, text []byte, c *fleetCounts) (accepted, ferretOK bool) {
	t.Helper()
	want := fleetRun(func() (*types.Document, error) { return ferretUnmarshal(text) })
	got, ok := fleetRunFast(func() (*types.Document, bool) { return fleetUnmarshal(text) })
	if got.panicked != nil {
		t.Fatalf("%s: fleetUnmarshal panicked (%v) on %q", what, got.panicked, text)
	}
	ferretOK = want.err == nil && want.panicked == nil
	if !ok {
		c.declined++
		if !ferretOK {
			c.refusedByBoth++
		}
		return false, ferretOK
	}
	c.accepted++
	if want.err != nil || want.panicked != nil {
		t.Fatalf("%s: fleetUnmarshal accepted a text FerretDB's Unmarshal refuses (%v %v): %q",
			what, want.err, want.panicked, text)
	}
	if d := fleetSame(want.value, got.value); d != "" {
		t.Fatalf("%s: fleetUnmarshal differs from FerretDB's Unmarshal at %s, text %q", what, d, text)
	}
	// and the patched entry point returns the same
	if d, err := Unmarshal(text); err != nil || fleetSame(want.value, d) != "" {
		t.Fatalf("%s: Unmarshal differs from FerretDB's (%v) on %q", what, err, text)
	}
	return true, true
}

// fleetCheckMarshal compares the codecs on one document: the same bytes, or both fail (error or panic).
func fleetCheckMarshal(t *testing.T, what string, d *types.Document) ([]byte, bool) {
	t.Helper()
	want := fleetRun(func() ([]byte, error) { return ferretMarshal(d) })
	got, ok := fleetRunFast(func() ([]byte, bool) { return fleetMarshal(d) })
	entry := fleetRun(func() ([]byte, error) { return Marshal(d) })
	switch {
	case want.panicked != nil:
		if got.panicked == nil && ok {
			t.Fatalf("%s: FerretDB's Marshal panicked (%v), fleetMarshal wrote %q", what, want.panicked, got.value)
		}
		if entry.panicked == nil {
			t.Fatalf("%s: FerretDB's Marshal panicked (%v), the patched Marshal did not", what, want.panicked)
		}
		return nil, false
	case got.panicked != nil:
		t.Fatalf("%s: fleetMarshal panicked (%v), FerretDB's Marshal did not", what, got.panicked)
	case want.err != nil:
		if ok {
			t.Fatalf("%s: FerretDB's Marshal failed (%v), fleetMarshal wrote %q", what, want.err, got.value)
		}
		if entry.err == nil {
			t.Fatalf("%s: FerretDB's Marshal failed (%v), the patched Marshal did not", what, want.err)
		}
		return nil, false
	case !ok:
		t.Fatalf("%s: fleetMarshal declined a document FerretDB's Marshal writes: %q", what, want.value)
	case !bytes.Equal(want.value, got.value):
		t.Fatalf("%s: fleetMarshal wrote\n%s\nFerretDB's Marshal\n%s", what, got.value, want.value)
	case entry.err != nil || !bytes.Equal(entry.value, want.value):
		t.Fatalf("%s: the patched Marshal differs from FerretDB's: %q, %v", what, entry.value, entry.err)
	}
	return want.value, true
}

// --- generated documents ------------------------------------------------------------------------------

type fleetGen struct{ r *rand.Rand }

var fleetStrings = []string{
	"", "a", "_id", "version", "dps", "1", "42", "value", "$s", "$k", "p", "t", "i", "o", "s",
	"with space", "dotted.key", "$dollar", "quote\"d", `back\slash`, "slash/ed", "<tag>", "a&b", "tab\there",
	"new\nline", "nul\x00byte", "\x01\x1f", "\x7f", "é", "Grüße", "日本語", "😀", "e\u0301", "\u2028", "\u2029",
	"\ufeff", "\uffff", "\xff", "a\xc3", "\xed\xa0\x80", "\u00a0", "%s %d", "{\"json\":[1,2]}", "null", "true",
	"0", "-0", "1e5", "AAAA", "aGVsbG8=", "507f1f77bcf86cd799439011", "507F1F77BCF86CD799439011",
}

func (g *fleetGen) pick(xs []string) string { return xs[g.r.Intn(len(xs))] }

func (g *fleetGen) str() string {
	if g.r.Intn(3) > 0 {
		return g.pick(fleetStrings)
	}
	var b strings.Builder
	for n := g.r.Intn(12); n > 0; n-- {
		switch g.r.Intn(6) {
		case 0:
			b.WriteByte(byte(g.r.Intn(0x80))) // any ASCII, controls included
		case 1:
			b.WriteRune(rune(0x80 + g.r.Intn(0x800)))
		case 2:
			b.WriteRune(rune(0x800 + g.r.Intn(0xF800))) // surrogate code points become U+FFFD
		case 3:
			b.WriteRune(rune(0x10000 + g.r.Intn(0x100000)))
		case 4:
			b.WriteByte(byte(0x80 + g.r.Intn(0x80))) // invalid UTF-8
		default:
			b.WriteString(g.pick(fleetStrings))
		}
	}
	return b.String()
}

var fleetDoubles = []float64{
	0, math.Copysign(0, -1), 1, -1, 0.1, 1.5, -2.25, 1e20, 1e21, -1e21, 1e-6, 1e-7, 123456789.123, 1 << 53,
	1<<53 + 1, math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, math.Pi, 1e308, 5e-324,
	math.MaxInt64, math.MinInt64, math.NaN(), math.Inf(1), math.Inf(-1),
}

func (g *fleetGen) scalar() any {
	switch g.r.Intn(13) {
	case 0:
		if g.r.Intn(2) == 0 {
			return fleetDoubles[g.r.Intn(len(fleetDoubles))]
		}
		return g.r.NormFloat64() * math.Pow(10, float64(g.r.Intn(40)-20))
	case 1:
		return g.str()
	case 2:
		b := make([]byte, g.r.Intn(20))
		g.r.Read(b)
		if g.r.Intn(8) == 0 {
			b = nil // json writes null for a nil slice
		}
		return types.Binary{B: b, Subtype: types.BinarySubtype(g.r.Intn(256))}
	case 3:
		var id types.ObjectID
		g.r.Read(id[:])
		return id
	case 4:
		return g.r.Intn(2) == 0
	case 5:
		ms := g.r.Int63n(1<<44) - 1<<43
		t := time.UnixMilli(ms)
		switch g.r.Intn(3) {
		case 0:
			t = t.UTC().Add(time.Duration(g.r.Intn(1_000_000))) // sub-millisecond parts are dropped
		case 1:
			t = t.In(time.FixedZone("X", 3600))
		}
		return t
	case 6:
		return types.Null
	case 7:
		return types.Regex{Pattern: g.str(), Options: g.pick([]string{"", "i", "imsx", "\"", "é"})}
	case 8:
		return []int32{0, 1, -1, math.MaxInt32, math.MinInt32, int32(g.r.Uint32())}[g.r.Intn(6)]
	case 9:
		return types.Timestamp([]uint64{0, 1, math.MaxUint64, g.r.Uint64()}[g.r.Intn(4)])
	default:
		return []int64{0, -1, math.MaxInt64, math.MinInt64, 1 << 53, g.r.Int63() - g.r.Int63()}[g.r.Intn(6)]
	}
}

func (g *fleetGen) value(depth int) any {
	if depth < 4 {
		switch g.r.Intn(8) {
		case 0:
			return g.doc(depth + 1)
		case 1:
			return g.array(depth + 1)
		}
	}
	return g.scalar()
}

func (g *fleetGen) doc(depth int) *types.Document {
	n := g.r.Intn(6)
	if g.r.Intn(10) == 0 {
		n = 10 + g.r.Intn(30) // past fleetScanKeys
	}
	d := types.MakeDocument(n)
	for i := 0; i < n; i++ {
		d.Set(g.str(), g.value(depth))
	}
	return d
}

func (g *fleetGen) array(depth int) *types.Array {
	a := types.MakeArray(0)
	for n := g.r.Intn(5); n > 0; n-- {
		a.Append(g.value(depth))
	}
	return a
}

// fleetTopDoc is a document as FerretDB stores one: `_id` first, top-level keys that are not `$s`.
func (g *fleetGen) topDoc() *types.Document {
	d := types.MakeDocument(0)
	switch g.r.Intn(3) {
	case 0:
		d.Set("_id", fmt.Sprintf("dev%06d", g.r.Intn(1_000_000)))
	case 1:
		var id types.ObjectID
		g.r.Read(id[:])
		d.Set("_id", id)
	default:
		d.Set("_id", g.value(3))
	}
	for _, k := range g.doc(0).Keys() {
		if k != "$s" && k != "_id" {
			d.Set(k, g.value(0))
		}
	}
	return d
}

// --- texts as other writers print them ------------------------------------------------------------------

// fleetReformat prints a JSON text again: `colon` and `comma` between tokens, object keys in jsonb's order
// (shorter first, then bytewise) when sortKeys, as PostgreSQL prints the jsonb FerretDB's PostgreSQL backend
// stores. Strings and numbers keep their values (strings re-escaped by json.Marshal, numbers verbatim).
func fleetReformat(text []byte, colon, comma string, sortKeys bool) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	var buf bytes.Buffer
	if err := fleetReformatValue(dec, &buf, colon, comma, sortKeys); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func fleetReformatValue(dec *json.Decoder, buf *bytes.Buffer, colon, comma string, sortKeys bool) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok := tok.(type) {
	case json.Delim:
		if tok == '[' {
			buf.WriteByte('[')
			for i := 0; dec.More(); i++ {
				if i > 0 {
					buf.WriteString(comma)
				}
				if err := fleetReformatValue(dec, buf, colon, comma, sortKeys); err != nil {
					return err
				}
			}
			_, err := dec.Token()
			buf.WriteByte(']')
			return err
		}
		type pair struct {
			key   string
			value []byte
		}
		var pairs []pair
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return err
			}
			var v bytes.Buffer
			if err := fleetReformatValue(dec, &v, colon, comma, sortKeys); err != nil {
				return err
			}
			pairs = append(pairs, pair{k.(string), v.Bytes()})
		}
		if _, err := dec.Token(); err != nil {
			return err
		}
		if sortKeys {
			sort.SliceStable(pairs, func(i, j int) bool {
				if len(pairs[i].key) != len(pairs[j].key) {
					return len(pairs[i].key) < len(pairs[j].key)
				}
				return pairs[i].key < pairs[j].key
			})
		}
		buf.WriteByte('{')
		for i, p := range pairs {
			if i > 0 {
				buf.WriteString(comma)
			}
			k, _ := json.Marshal(p.key)
			buf.Write(k)
			buf.WriteString(colon)
			buf.Write(p.value)
		}
		buf.WriteByte('}')
	case string:
		b, _ := json.Marshal(tok)
		buf.Write(b)
	case json.Number:
		buf.WriteString(tok.String())
	case bool:
		fmt.Fprint(buf, tok)
	case nil:
		buf.WriteString("null")
	}
	return nil
}

// fleetVariants is the text as other writers print it, and mutations of it: whitespace, escapes, number
// spellings, schema fields spelled otherwise, truncations and random byte edits.
func fleetVariants(r *rand.Rand, text []byte) map[string][]byte {
	v := map[string][]byte{}
	if b, err := fleetReformat(text, ": ", ", ", true); err == nil {
		v["jsonb"] = b
	}
	if b, err := fleetReformat(text, ":", ",", true); err == nil {
		v["sorted"] = b
	}
	var indented bytes.Buffer
	if json.Indent(&indented, text, "", "  ") == nil {
		v["indented"] = indented.Bytes()
	}
	v["leading space"] = append([]byte(" "), text...)
	v["trailing space"] = append(append([]byte{}, text...), ' ')
	v["trailing newline"] = append(append([]byte{}, text...), '\n')
	v["trailing brace"] = append(append([]byte{}, text...), '}')
	replacements := [][2]string{
		{`"t":"int"`, `"t":"long"`}, {`"t":"long"`, `"t":"int"`}, {`"t":"long"`, `"t":"double"`},
		{`"t":"int"`, `"t":"date"`}, {`"t":"long"`, `"t":"timestamp"`}, {`"t":"double"`, `"t":"long"`},
		{`"t":"string"`, `"t":"objectId"`}, {`"t":"string"`, `"t":"binData"`}, {`"t":"string"`, `"t":"regex"`},
		{`"t":"objectId"`, `"t":"string"`}, {`"t":"bool"`, `"t":"null"`}, {`"t":"object"`, `"t":"array"`},
		{`"t":"array"`, `"t":"object"`}, {`"t":`, `"T":`}, {`"p":`, `"P":`}, {`"$k":`, `"$K":`},
		{`"$s":`, `"$S":`}, {`"i":`, `"I":`}, {`"t":"`, `"t":null,"x":"`}, {`{"t":"string"}`, `null`},
		{`"s":`, `"s":1,"s":`}, {`"s":0`, `"s":256`}, {`"s":0`, `"s":-1`}, {`"s":0`, `"s":0.0`},
		{`"s":`, `"o":"x","s":`}, {`"o":""`, `"o":null`}, {`"o":"`, `"o":1,"x":"`},
		{`"$k":[`, `"$k":["extra",`}, {`"$k":["`, `"$k":["$s","`}, {`"p":{`, `"p":{"$s":{"t":"int"},`},
		{`"i":[]`, `"i":null`}, {`,"i":[]`, ``}, {`"i":[{`, `"i":[null,{`}, {`:[`, `:[null,`},
		{`:0`, `:-0`}, {`:1`, `:1.0`}, {`:1`, `:1e0`}, {`:1`, `:01`}, {`:1`, `:1.`}, {`:1`, `:99999999999999999999`},
		{`:-`, `:--`}, {`:1`, `:1e400`}, {`":"`, `":"\u0041`}, {`":"`, `":"\"`}, {`":"`, `":"\/\b\f\n\r\t`},
		{`":"`, `":"\ud83d\ude00`}, {`":"`, `":"\ud800`}, {`":"`, `":"\u00e9`}, {`":"`, `":"\x`}, {`":"`, `":"\u12`},
		{`":"`, `":"\'`}, {`":"`, "\":\"\t"}, {`":"`, "\":\"\xff"}, {`":"`, "\":\"\xc3\\u00a9"},
		{`:true`, `:True`}, {`:true`, `:1`}, {`:null`, `:nul`}, {`,"`, `, "`}, {`,"`, `,,"`}, {`}`, `,}`},
		{`{}`, `{"a":1}`}, {`[]`, `[1]`}, {`"$s":{}`, `"$s":{"p":{},"$k":[]}`}, {`"$s":{`, `"$s":{"p":null,`},
		{`"`, `\"`}, {`:`, ` : `}, {`"_id":`, `"_id":1,"_id":`},
	}
	for _, rep := range replacements {
		if bytes.Contains(text, []byte(rep[0])) {
			v["replace "+rep[0]+" by "+rep[1]] = bytes.Replace(text, []byte(rep[0]), []byte(rep[1]), 1)
			v["replace all "+rep[0]+" by "+rep[1]] = bytes.ReplaceAll(text, []byte(rep[0]), []byte(rep[1]))
		}
	}
	if len(text) <= 300 {
		for i := 0; i < len(text); i++ {
			v[fmt.Sprintf("prefix %d", i)] = text[:i]
		}
	}
	const alphabet = "{}[]\":,\\ 0123456789-+.eE$tspiokrnulfaTu\x00\x7f\xc3\xa9\xff"
	for k := 0; k < 40; k++ {
		b := append([]byte{}, text...)
		for edits := 1 + r.Intn(3); edits > 0 && len(b) > 0; edits-- {
			i := r.Intn(len(b))
			switch r.Intn(3) {
			case 0:
				b = append(b[:i], b[i+1:]...)
			case 1:
				b = append(b[:i], append([]byte{alphabet[r.Intn(len(alphabet))]}, b[i:]...)...)
			default:
				b[i] = alphabet[r.Intn(len(alphabet))]
			}
		}
		v[fmt.Sprintf("edit %d", k)] = b
	}
	return v
}

// --- the tests ------------------------------------------------------------------------------------------

// TestFleetGeneratedDocuments: random documents of every type sjson knows, nested, with awkward keys and
// strings: the same text from both Marshals, and from both Unmarshals of it (and of it as jsonb prints it)
// the same document. The one-pass Unmarshal must take every such text FerretDB's takes, but for texts with
// invalid UTF-8 (Marshal writes top-level keys unescaped).
func TestFleetGeneratedDocuments(t *testing.T) {
	g := fleetGen{rand.New(rand.NewSource(15))}
	var c fleetCounts
	written, required := 0, 0
	for i := 0; i < 10_000; i++ {
		d := g.topDoc()
		text, ok := fleetCheckMarshal(t, fmt.Sprintf("document %d", i), d)
		if !ok {
			continue
		}
		written++
		texts := [][]byte{text}
		if jsonb, err := fleetReformat(text, ": ", ", ", true); err == nil {
			texts = append(texts, jsonb)
		}
		for _, text := range texts {
			accepted, ferretOK := fleetCheckUnmarshal(t, fmt.Sprintf("document %d", i), text, &c)
			if ferretOK && utf8.Valid(text) && !fleetSurrogates(text) {
				required++
				if !accepted {
					t.Fatalf("document %d: fleetUnmarshal declined a text FerretDB's Unmarshal reads: %q", i, text)
				}
			}
		}
	}
	t.Logf("%d documents written; fleetUnmarshal: %d texts accepted, %d declined; %d had to be accepted",
		written, c.accepted, c.declined, required)
	if written < 8_000 || required < 8_000 {
		t.Fatalf("too few documents went through the one-pass code: %+v, %d written, %d required", c, written, required)
	}
}

// fleetSurrogates: the text holds a `\u` escape of a UTF-16 surrogate, which the one-pass code declines
// (json.Marshal never writes one: it writes astral characters as they are).
func fleetSurrogates(text []byte) bool {
	lower := bytes.ToLower(text)
	for _, prefix := range []string{`\ud8`, `\ud9`, `\uda`, `\udb`, `\udc`, `\udd`, `\ude`, `\udf`} {
		if bytes.Contains(lower, []byte(prefix)) {
			return true
		}
	}
	return false
}

// TestFleetMutatedTexts: texts FerretDB wrote, then reformatted, escaped, retyped, truncated and edited at
// random: the one-pass Unmarshal takes a text only where FerretDB's takes it, and then decodes the same.
func TestFleetMutatedTexts(t *testing.T) {
	g := fleetGen{rand.New(rand.NewSource(1524))}
	var c fleetCounts
	for i := 0; i < 600; i++ {
		d := g.topDoc()
		if i%3 == 0 {
			shapes := fleetShapes(g.r)
			d = shapes[(i/3)%len(shapes)]
		}
		text, ok := fleetCheckMarshal(t, fmt.Sprintf("document %d", i), d)
		if !ok {
			continue
		}
		variants := fleetVariants(g.r, text)
		names := make([]string, 0, len(variants))
		for name := range variants {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			fleetCheckUnmarshal(t, fmt.Sprintf("document %d, %s", i, name), variants[name], &c)
		}
	}
	t.Logf("mutated texts: %d accepted, %d declined (%d of them refused by FerretDB's Unmarshal too)",
		c.accepted, c.declined, c.refusedByBoth)
	if c.accepted < 2_000 || c.refusedByBoth < 2_000 {
		t.Fatalf("the mutations exercised too little: %+v", c)
	}
}

// TestFleetHandWrittenTexts: texts no Marshal writes, each on an edge of the JSON grammar or of the schema.
func TestFleetHandWrittenTexts(t *testing.T) {
	var c fleetCounts
	texts := []string{
		``, `{}`, `null`, `[]`, `{"$s":{}}`, `{"$s":{"p":{},"$k":[]}}`, `{"$s":{"$k":[]}}`, `{"$s":{"p":{}}}`,
		`{"$s":null}`, `{"$s":{},"a":1}`, `{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":1}`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":null}`, `{"$s":{"p":{},"$k":["a"]},"a":null}`,
		`{"$s":{"p":{},"$k":["a"]},"a":1}`, `{"$s":{"p":{"a":{"t":"int"}},"$k":["a","a"]},"a":1,"b":2}`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":1,"a":2}`, `{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":2147483648}`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":-2147483648}`, `{"$s":{"p":{"a":{"t":"long"}},"$k":["a"]},"a":-0}`,
		`{"$s":{"p":{"a":{"t":"double"}},"$k":["a"]},"a":-0}`, `{"$s":{"p":{"a":{"t":"double"}},"$k":["a"]},"a":-0.0e-0}`,
		`{"$s":{"p":{"a":{"t":"double"}},"$k":["a"]},"a":1E+2}`, `{"$s":{"p":{"a":{"t":"double"}},"$k":["a"]},"a":4.9e-325}`,
		`{"$s":{"p":{"a":{"t":"double"}},"$k":["a"]},"a":1.7976931348623159e308}`, `{"$s":{"p":{"a":{"t":"double"}},"$k":["a"]},"a":NaN}`,
		`{"$s":{"p":{"a":{"t":"timestamp"}},"$k":["a"]},"a":18446744073709551615}`,
		`{"$s":{"p":{"a":{"t":"timestamp"}},"$k":["a"]},"a":18446744073709551616}`,
		`{"$s":{"p":{"a":{"t":"date"}},"$k":["a"]},"a":-62135596800000}`, `{"$s":{"p":{"a":{"t":"date"}},"$k":["a"]},"a":9223372036854775807}`,
		`{"$s":{"p":{"a":{"t":"objectId"}},"$k":["a"]},"a":"507F1F77BCF86CD799439011"}`,
		`{"$s":{"p":{"a":{"t":"objectId"}},"$k":["a"]},"a":"507f1f77bcf86cd79943901"}`,
		`{"$s":{"p":{"a":{"t":"objectId"}},"$k":["a"]},"a":"507f1f77bcf86cd79943901g"}`,
		`{"$s":{"p":{"a":{"t":"binData","s":0}},"$k":["a"]},"a":""}`, `{"$s":{"p":{"a":{"t":"binData","s":0}},"$k":["a"]},"a":"aGk="}`,
		`{"$s":{"p":{"a":{"t":"binData","s":0}},"$k":["a"]},"a":"aGk"}`, `{"$s":{"p":{"a":{"t":"binData","s":0}},"$k":["a"]},"a":"aG\nk="}`,
		`{"$s":{"p":{"a":{"t":"binData","s":0}},"$k":["a"]},"a":"aG\rk="}`, `{"$s":{"p":{"a":{"t":"binData","s":0}},"$k":["a"]},"a":"a G k ="}`,
		`{"$s":{"p":{"a":{"t":"binData","s":255}},"$k":["a"]},"a":"/+8="}`, `{"$s":{"p":{"a":{"t":"binData","s":0}},"$k":["a"]},"a":"_-8="}`,
		`{"$s":{"p":{"a":{"t":"binData","s":0}},"$k":["a"]},"a":[1,2]}`, `{"$s":{"p":{"a":{"t":"binData"}},"$k":["a"]},"a":"aGk="}`,
		`{"$s":{"p":{"a":{"t":"regex","o":"i"}},"$k":["a"]},"a":"^a\\.b$"}`, `{"$s":{"p":{"a":{"t":"regex"}},"$k":["a"]},"a":"x"}`,
		`{"$s":{"p":{"a":{"t":"string","o":"i","s":3}},"$k":["a"]},"a":"x"}`, `{"$s":{"p":{"a":{"t":"string","s":300}},"$k":["a"]},"a":"x"}`,
		`{"$s":{"p":{"a":{"t":"string","x":1}},"$k":["a"]},"a":"x"}`, `{"$s":{"p":{"a":{"t":"string"},"b":{"t":"bogus"}},"$k":["a"]},"a":"x"}`,
		`{"$s":{"p":{"a":{"t":"bogus"}},"$k":["a"]},"a":null}`, `{"$s":{"p":{"a":{"t":"null"}},"$k":["a"]},"a":1}`,
		`{"$s":{"p":{"a":{"t":"object","$s":{}}},"$k":["a"]},"a":{}}`, `{"$s":{"p":{"a":{"t":"object","$s":{"p":{"b":{"t":"int"}},"$k":["b"]}}},"$k":["a"]},"a":{}}`,
		`{"$s":{"p":{"a":{"t":"object"}},"$k":["a"]},"a":{}}`, `{"$s":{"p":{"a":{"t":"object","$s":{}}},"$k":["a"]},"a":{"b":1}}`,
		`{"$s":{"p":{"a":{"t":"object","$s":{"p":{"$s":{"t":"int"}},"$k":["$s"]}}},"$k":["a"]},"a":{"$s":1}}`,
		`{"$s":{"p":{"a":{"t":"array","i":[]}},"$k":["a"]},"a":[]}`, `{"$s":{"p":{"a":{"t":"array"}},"$k":["a"]},"a":[]}`,
		`{"$s":{"p":{"a":{"t":"array","i":[{"t":"int"}]}},"$k":["a"]},"a":[null]}`, `{"$s":{"p":{"a":{"t":"array","i":[null]}},"$k":["a"]},"a":[null]}`,
		`{"$s":{"p":{"a":{"t":"array","i":[{"t":"int"}]}},"$k":["a"]},"a":[1,2]}`, `{"$s":{"p":{"a":{"t":"array","i":[{"t":"int"},{"t":"int"}]}},"$k":["a"]},"a":[1]}`,
		`{"$s":{"p":{"a":{"t":"string"}},"$k":["a"]},"a":"\u0000\u001f\u007f\u2028\uFFFF"}`, `{"$s":{"p":{"a":{"t":"string"}},"$k":["a"]},"a":"\uD83D\uDE00"}`,
		`{"$s":{"p":{"\u0061":{"t":"string"}},"$k":["a"]},"a":"x"}`, `{"$s":{"p":{"a":{"t":"string"}},"$k":["\u0061"]},"\u0061":"x"}`,
		`{"$s":{"p":{"é":{"t":"string"}},"$k":["\u00e9"]},"e\u0301":"x"}`, "{\"$s\":{\"p\":{\"a\":{\"t\":\"string\"}},\"$k\":[\"a\"]},\"a\":\"\xff\"}",
		"{\"$s\":{\"p\":{\"\xff\":{\"t\":\"string\"}},\"$k\":[\"\\ufffd\"]},\"\xff\":\"x\"}",
		` {"$s":{}}`, `{"$s":{}} `, "{\"$s\":{}}\n", `{"$s":{}}{}`, "\ufeff{\"$s\":{}}", `{ "$s" : { } }`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":1,"$s":{}}`, `{"a":1,"$s":{"p":{"a":{"t":"int"}},"$k":["a"]}}`,
		`{"$s":{"$k":["a"],"p":{"a":{"t":"int"}}},"a":1}`, `{"$s":{"p":{"a":{"$s":{},"t":"object"}},"$k":["a"]},"a":{}}`,
		`{"$s":{"p":{"a":{"i":[],"t":"array"}},"$k":["a"]},"a":[]}`, `{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":1 }`,
		`{"$s":{"p":{"a":{"t":"bool"}},"$k":["a"]},"a":true}`, `{"$s":{"p":{"a":{"t":"bool"}},"$k":["a"]},"a":0}`,
		`{"$s":{"p":{"a":{"t":"bool"}},"$k":["a"]},"a":"true"}`, `{"$s":{"p":{"a":{"t":"string"}},"$k":["a"]},"a":1}`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":"1"}`, `{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":1}}`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":1,}`, `{"$s":{"p":{"a":{"t":"int"}},"$k":["a"],},"a":1}`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":[}`, `{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a"`,
		strings.Repeat(`[`, 300) + strings.Repeat(`]`, 300),
		`{"$s":{"p":{"a":{"t":"array","i":[{"t":"array","i":[]}]}},"$k":["a"]},"a":[` + strings.Repeat(`[`, 250) + strings.Repeat(`]`, 250) + `]}`,
	}
	for i, text := range texts {
		fleetCheckUnmarshal(t, fmt.Sprintf("text %d", i), []byte(text), &c)
	}
	t.Logf("hand-written texts: %d accepted, %d declined", c.accepted, c.declined)
	if c.accepted < 30 {
		t.Fatalf("too few hand-written texts went through the one-pass code: %+v", c)
	}
}

// fleetShapes: documents shaped like those tuya-fleet's services write: a status shadow with its journal
// (JSON text in strings) and outbox (events as binData), a DP schema, an OTA progress counter with its
// applied ids, a pairing session, a dedup record.
func fleetShapes(r *rand.Rand) []*types.Document {
	now := time.UnixMilli(1_764_400_000_000 + r.Int63n(1_000_000))
	doc := func(pairs ...any) *types.Document {
		d := types.MakeDocument(len(pairs) / 2)
		for i := 0; i < len(pairs); i += 2 {
			d.Set(pairs[i].(string), pairs[i+1])
		}
		return d
	}
	array := func(values ...any) *types.Array {
		a := types.MakeArray(len(values))
		for _, v := range values {
			a.Append(v)
		}
		return a
	}
	dps := types.MakeArray(0)
	for i := 1; i <= 8; i++ {
		dps.Append(doc(
			"code", fmt.Sprintf("switch_%d", i), "value", []any{true, int32(i * 10), 21.5, "cold", types.Null}[i%5],
			"raw", types.Null, "t", int64(1_764_400_000_000+i), "dp_id", int32(i), "type", "bool",
			"flags", array(), "source", "report",
		))
	}
	body, _ := json.Marshal(map[string]any{"id": "evt-1", "type": "status.changed", "data": map[string]any{
		"device_id": "dev000001", "dps": []any{map[string]any{"code": "switch_1", "value": true}},
		"note": "<&> \"quoted\" é 😀",
	}})
	journal, _ := json.Marshal([]any{
		map[string]any{"code": "switch_1", "dp_id": 1, "value": true, "raw": nil, "t": 1_764_400_000_001},
		map[string]any{"code": "temp", "dp_id": 2, "value": 21.5, "raw": "AQI=", "t": 1_764_400_000_002},
	})
	shadow := doc(
		"_id", fmt.Sprintf("dev%06d", r.Intn(10_000)), "product_id", "product07", "version", int64(r.Intn(1000)),
		"write_id", "w-3f2a", "updated_at", now, "dps", dps,
		"presence", doc("online", true, "reported_online", true, "changed_at_ms", int64(1_764_400_000_000),
			"last_seen_ms", int64(1_764_400_000_500), "deadline_ms", int64(1_764_400_600_000),
			"inactive_at_ms", types.Null, "cause", types.Null),
		"inactivity_timeout", types.Null,
		"binding", doc("state", "bound", "owner_uid", "ay1622", "home_id", "home00042", "at_ms", int64(1)),
		"name", doc("name", "Küche \"links\"", "at_ms", int64(2)),
		"dp_names", array(doc("dp_id", "1", "name", "Licht", "at_ms", int64(3))),
		"firmware", array(doc("channel", int32(0), "upgrade_status", int32(1), "at_ms", int64(4),
			"progress_percent", int32(50), "description", "", "version", "1.2.3", "version_at_ms", int64(5))),
		"outbox", array(
			doc("id", "evt-1", "topic", "persistent://fleet/device/events", "key", "dev000001",
				"body", types.Binary{B: body, Subtype: types.BinaryGeneric}),
			doc("id", "evt-2", "topic", "persistent://fleet/device/events", "key", "dev000001",
				"body", types.Binary{B: []byte{}, Subtype: types.BinaryGeneric}),
		),
		"journal", doc("since_ms", int64(1_764_400_000_000), "dps", string(journal), "presence", `[{"online":true,"t":1}]`),
	)
	emptyShadow := doc("_id", "dev000002", "version", int64(0), "dps", array(), "outbox", array(),
		"journal", doc("since_ms", types.Null, "dps", "[]", "presence", "[]"))
	schema := doc("_id", "product07", "fetched_at", now, "dps", array(
		doc("code", "temp_set", "dp_id", int32(2), "type", "value", "scale", int32(1), "min", int32(-200),
			"max", int32(500), "unit", "°C", "range", array(), "labels", array(), "maxlen", types.Null),
		doc("code", "mode", "dp_id", int32(4), "type", "enum", "scale", int32(0), "min", types.Null,
			"max", types.Null, "unit", types.Null, "range", array("auto", "manual", "eco"), "labels", array(),
			"maxlen", types.Null),
	))
	applied := types.MakeArray(0)
	ids := types.MakeArray(0)
	for i := 0; i < 40; i++ {
		ids.Append(fmt.Sprintf("entry-%04d", i))
		applied.Append(doc("id", fmt.Sprintf("entry-%04d", i), "at", now))
	}
	progress := doc("_id", "release-1|eu|canary", "release_id", "release-1", "region", "eu", "stage", "canary",
		"counts", doc("targeted", int32(1000), "pending", int32(12), "dispatched", int64(300),
			"succeeded", int32(650), "failed", int32(30), "cancelled", int32(8)),
		"applying", ids, "applied_at", applied)
	session := doc("_id", types.ObjectID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, "token", "AY12ab34",
		"owner_uid", "ay1622", "home_id", int64(42), "expires_at", now, "devices", array("dev1", "dev2"),
		"state", "waiting", "attempts", int32(0), "ratio", 0.25)
	dedup := doc("_id", "msg-9f86d081884c7d65", "seen_at", now, "expire_at_ms", int64(1_764_400_086_400))
	return []*types.Document{shadow, emptyShadow, schema, progress, session, dedup}
}

// TestFleetServiceShapes: the documents tuya-fleet writes go through the one-pass code both ways, and as
// their fields change (version, DP values, outbox growing and emptied) they stay identical to FerretDB's.
func TestFleetServiceShapes(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	var c fleetCounts
	for round := 0; round < 300; round++ {
		for i, d := range fleetShapes(r) {
			what := fmt.Sprintf("shape %d, round %d", i, round)
			text, ok := fleetCheckMarshal(t, what, d)
			if !ok {
				t.Fatalf("%s: FerretDB's Marshal failed", what)
			}
			if accepted, _ := fleetCheckUnmarshal(t, what, text, &c); !accepted {
				t.Fatalf("%s: fleetUnmarshal declined %q", what, text)
			}
			jsonb, err := fleetReformat(text, ": ", ", ", true)
			if err != nil {
				t.Fatal(err)
			}
			if accepted, _ := fleetCheckUnmarshal(t, what+" as jsonb", jsonb, &c); !accepted {
				t.Fatalf("%s: fleetUnmarshal declined the jsonb text %q", what, jsonb)
			}
		}
	}
	t.Logf("service shapes: %d accepted, %d declined", c.accepted, c.declined)
}

// BenchmarkFleetShadow: a status shadow's round trip, one-pass against FerretDB's code.
func BenchmarkFleetShadow(b *testing.B) {
	d := fleetShapes(rand.New(rand.NewSource(1)))[0]
	text, _ := ferretMarshal(d)
	b.Run("ferret", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_, _ = ferretMarshal(d)
			_, _ = ferretUnmarshal(text)
		}
	})
	b.Run("fleet", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_, _ = fleetMarshal(d)
			_, _ = fleetUnmarshal(text)
		}
	})
}
