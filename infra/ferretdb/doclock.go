package main

// Per-document write serialisation, for the PostgreSQL backend.
//
// FerretDB 1.x runs an update as "query the documents, then write them back" without isolating the two
// steps (see main.go), so two writes to one document must not overlap. With SQLite the front runs all writes
// one at a time (SQLite itself fails with SQLITE_BUSY at a few concurrent writers). PostgreSQL runs concurrent
// transactions, so here only writes that may touch the same document wait for each other: a write whose
// every statement names its documents by `_id` (equality, `$eq` or `$in` of strings or ObjectIds) locks
// those documents, in a fixed order (no deadlock between commands naming several); any other write (a
// filter on other fields, create, drop, index changes) runs alone, as with SQLite. Inserts lock nothing:
// PostgreSQL's unique `_id` index decides between two inserts of one `_id`, as MongoDB's does.

import (
	"encoding/binary"
	"slices"
	"sync"
)

// maxLockedIDs bounds the documents one command may lock; a bigger `$in` runs alone instead.
const maxLockedIDs = 1000

type writeLocker interface {
	// lock blocks until the write may run; the returned function ends it.
	lock(request []byte) (unlock func())
}

// globalLock runs writes one at a time (the SQLite backend).
type globalLock struct{ mu sync.Mutex }

func (g *globalLock) lock([]byte) func() {
	g.mu.Lock()
	return g.mu.Unlock
}

type docLocks struct {
	all sync.RWMutex // writes naming their documents share it; any other write holds it alone

	mu   sync.Mutex
	held map[string]*docLock // by "db\x00collection\x00" + the `_id`'s BSON type and bytes
}

type docLock struct {
	mu   sync.Mutex
	refs int // commands holding or waiting for it; the entry goes when none do
}

func newDocLocks() *docLocks { return &docLocks{held: map[string]*docLock{}} }

func (d *docLocks) lock(request []byte) func() {
	keys, ok := writeKeys(request)
	if !ok {
		d.all.Lock()
		return d.all.Unlock
	}
	d.all.RLock()
	slices.Sort(keys)
	keys = slices.Compact(keys)
	locks := make([]*docLock, len(keys))
	for i, key := range keys {
		locks[i] = d.acquire(key)
	}
	return func() {
		for i := len(keys) - 1; i >= 0; i-- {
			locks[i].mu.Unlock()
			d.release(keys[i])
		}
		d.all.RUnlock()
	}
}

func (d *docLocks) acquire(key string) *docLock {
	d.mu.Lock()
	l := d.held[key]
	if l == nil {
		l = &docLock{}
		d.held[key] = l
	}
	l.refs++
	d.mu.Unlock()
	l.mu.Lock()
	return l
}

func (d *docLocks) release(key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if l := d.held[key]; l != nil {
		l.refs--
		if l.refs == 0 {
			delete(d.held, key)
		}
	}
}

// writeKeys is the documents a write command touches, as lock keys; ok is false when it cannot say (the
// command must run alone). An insert touches only new documents: no keys, ok.
func writeKeys(request []byte) (keys []string, ok bool) {
	command := commandName(request)
	collection, db := commandTarget(request)
	if db == "" || collection == "" {
		return nil, false
	}
	prefix := db + "\x00" + collection + "\x00"
	var statements [][]byte
	var filterField string
	switch command {
	case "insert":
		return nil, true
	case "update":
		statements, ok = commandDocuments(request, "updates")
		filterField = "q"
	case "delete":
		statements, ok = commandDocuments(request, "deletes")
		filterField = "q"
	case "findAndModify", "findandmodify":
		statements, ok = [][]byte{bodyDocument(request)}, bodyDocument(request) != nil
		filterField = "query"
	default:
		return nil, false
	}
	if !ok || len(statements) == 0 {
		return nil, false
	}
	for _, statement := range statements {
		kind, filter, found := field(statement, filterField)
		if !found || kind != 0x03 {
			return nil, false
		}
		ids, named := filterIDs(filter)
		if !named || len(keys)+len(ids) > maxLockedIDs {
			return nil, false
		}
		for _, id := range ids {
			keys = append(keys, prefix+id)
		}
	}
	return keys, true
}

// filterIDs is the `_id` values a filter limits its matches to, as BSON type byte + value bytes: `_id: v`,
// `_id: {$eq: v}` or `_id: {$in: [v, ...]}` with strings and ObjectIds. Other types are left out because
// MongoDB equates values of different encodings (1, 1.0 and NumberLong(1)), which the bytes would not.
func filterIDs(filter []byte) ([]string, bool) {
	kind, value, found := field(filter, "_id")
	if !found {
		return nil, false
	}
	if id, ok := idKey(kind, value); ok {
		return []string{id}, true
	}
	if kind != 0x03 || elementCount(value) != 1 {
		return nil, false
	}
	if k, v, ok := field(value, "$eq"); ok {
		id, isID := idKey(k, v)
		return []string{id}, isID
	}
	k, in, ok := field(value, "$in")
	if !ok || k != 0x04 {
		return nil, false
	}
	var ids []string
	every := eachElement(in, func(kind byte, _ string, value []byte) bool {
		id, isID := idKey(kind, value)
		ids = append(ids, id)
		return isID
	})
	return ids, every && len(ids) > 0
}

func idKey(kind byte, value []byte) (string, bool) {
	if kind != 0x02 && kind != 0x07 {
		return "", false
	}
	return string([]byte{kind}) + string(value), true
}

// bodyDocument is an OP_MSG's body (section kind 0), the command document; nil if there is none.
func bodyDocument(msg []byte) []byte {
	if opCode(msg) != opMsg || len(msg) < 26 || msg[20] != 0 {
		return nil
	}
	size := int(binary.LittleEndian.Uint32(msg[21:25]))
	if size < 5 || 21+size > len(msg) {
		return nil
	}
	return msg[21 : 21+size]
}

// commandDocuments is the documents of a command's array argument, sent either as an OP_MSG document
// sequence (section kind 1, as drivers send bulk writes) or as an array in the body.
func commandDocuments(msg []byte, name string) ([][]byte, bool) {
	pos := 20
	for pos+5 <= len(msg) {
		kind := msg[pos]
		if kind == 0 { // body: a BSON document
			size := int(binary.LittleEndian.Uint32(msg[pos+1 : pos+5]))
			if size < 5 || pos+1+size > len(msg) {
				return nil, false
			}
			pos += 1 + size
			continue
		}
		size := int(binary.LittleEndian.Uint32(msg[pos+1 : pos+5]))
		if kind != 1 || size < 4 || pos+1+size > len(msg) {
			return nil, false
		}
		identifier, rest, ok := cstring(msg[pos+5 : pos+1+size])
		if !ok {
			return nil, false
		}
		if identifier == name {
			var docs [][]byte
			for len(rest) >= 5 {
				n := int(binary.LittleEndian.Uint32(rest[:4]))
				if n < 5 || n > len(rest) {
					return nil, false
				}
				docs, rest = append(docs, rest[:n]), rest[n:]
			}
			return docs, len(rest) == 0
		}
		pos += 1 + size
	}
	kind, array, found := field(bodyDocument(msg), name)
	if !found || kind != 0x04 {
		return nil, false
	}
	var docs [][]byte
	every := eachElement(array, func(kind byte, _ string, value []byte) bool {
		docs = append(docs, value)
		return kind == 0x03
	})
	return docs, every
}

// field finds a top-level element of a BSON document: its type and value bytes.
func field(doc []byte, name string) (kind byte, value []byte, found bool) {
	eachElement(doc, func(k byte, n string, v []byte) bool {
		if n == name {
			kind, value, found = k, v, true
			return false
		}
		return true
	})
	return kind, value, found
}

func elementCount(doc []byte) int {
	n := 0
	eachElement(doc, func(byte, string, []byte) bool { n++; return true })
	return n
}

// eachElement calls fn for each element of a BSON document (or array) until fn returns false; false if it
// stopped early or the document is malformed.
func eachElement(doc []byte, fn func(kind byte, name string, value []byte) bool) bool {
	if len(doc) < 5 || int(binary.LittleEndian.Uint32(doc[:4])) != len(doc) {
		return false
	}
	elements := doc[4 : len(doc)-1]
	for len(elements) > 0 {
		kind := elements[0]
		name, rest, ok := cstring(elements[1:])
		if !ok {
			return false
		}
		n := valueSize(kind, rest)
		if n < 0 || n > len(rest) {
			return false
		}
		if !fn(kind, name, rest[:n]) {
			return false
		}
		elements = rest[n:]
	}
	return true
}
