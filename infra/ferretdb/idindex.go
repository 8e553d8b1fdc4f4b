package main

// FerretDB 1.24's SQLite backend indexes `_id` as `_ferretdb_sjson->"_id"` but looks documents up with
// `WHERE _ferretdb_sjson->'$._id' = ?`. SQLite only uses an expression index for the same expression, so
// every `_id` lookup, update and delete scans the whole table (measured at 10k documents of ~1 KB: find_one
// 76/s, replace_one 24/s; with an index on the lookup expression 1,463/s and 588/s). MongoDB always serves
// `_id` lookups from its index, so the front adds the missing index to each collection's table the first
// time a write names the collection. FerretDB does not know about the extra index (listIndexes is unchanged)
// and SQLite maintains it; a dropped collection takes it along with its table.

import (
	"database/sql"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	_ "modernc.org/sqlite" // the driver FerretDB's SQLite backend uses
)

const idLookupExpression = `_ferretdb_sjson->'$._id'`

// `_id` as an SQL value: the patched build (fleet_devstack/ferretdb_patch.py) answers string ranges of `_id`
// from an index on it, so a sweep by `_id` range reads only what it deletes.
const idTextExpression = `_ferretdb_sjson->>'$._id'`

// Writes that may create a collection; after their reply the collection's table exists.
var creatingCommands = map[string]bool{
	"insert": true, "update": true, "findAndModify": true, "findandmodify": true,
	"create": true, "createIndexes": true,
}

// Writes after which a collection name may map to a new table.
var droppingCommands = map[string]bool{"drop": true, "dropDatabase": true, "renameCollection": true}

type idIndexer struct {
	dataDir string
	logger  *slog.Logger

	mu      sync.Mutex
	indexed map[string]bool // "db\x00collection"
}

func newIDIndexer(dataDir string, logger *slog.Logger) *idIndexer {
	return &idIndexer{dataDir: dataDir, logger: logger, indexed: map[string]bool{}}
}

// afterWrite runs once a write command's reply has come back from FerretDB, before it is relayed and still
// under the write lock, so no other write runs while an index is being built.
func (x *idIndexer) afterWrite(request []byte) {
	command := commandName(request)
	if !creatingCommands[command] && !droppingCommands[command] {
		return
	}
	collection, db := commandTarget(request)
	if db == "" {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if command == "renameCollection" { // runs on `admin` with full names: forget everything, it is rare
		clear(x.indexed)
		return
	}
	if droppingCommands[command] {
		for key := range x.indexed {
			if len(key) > len(db) && key[:len(db)+1] == db+"\x00" {
				delete(x.indexed, key)
			}
		}
		return
	}
	key := db + "\x00" + collection
	if collection == "" || x.indexed[key] {
		return
	}
	done, err := x.ensure(db, collection)
	if err != nil {
		// lookups stay correct, only slow; the next write to the collection tries again
		x.logger.Warn("could not add the _id lookup index", "db", db, "collection", collection, "error", err)
		return
	}
	x.indexed[key] = done
}

// ensure adds the index to the collection's table; false when the collection has no table (yet). The
// connection is opened for this and closed again: a database can be dropped (its file deleted) and re-created
// at any time, and a connection kept open to a deleted file made FerretDB's next use of the name fail.
func (x *idIndexer) ensure(db, collection string) (bool, error) {
	path := filepath.Join(x.dataDir, db+".sqlite")
	if _, err := os.Stat(path); err != nil {
		return false, nil // FerretDB has not created the database file: nothing to index
	}
	conn, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return false, err
	}
	defer conn.Close()
	var table string
	err = conn.QueryRow(`SELECT table_name FROM _ferretdb_collections WHERE name = ?`, collection).Scan(&table)
	if err == sql.ErrNoRows {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for suffix, expression := range map[string]string{"_fleet_id_lookup": idLookupExpression, "_fleet_id_text": idTextExpression} {
		index := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (%s)`, table+suffix, table, expression)
		if _, err := conn.Exec(index); err != nil {
			return false, err
		}
	}
	return true, nil
}

// commandTarget reads the command's first value when it is a string (the collection) and `$db` from an
// OP_MSG body (section kind 0 at offset 20, the BSON document right after it).
func commandTarget(msg []byte) (collection, db string) {
	if opCode(msg) != opMsg || len(msg) < 26 || msg[20] != 0 {
		return "", ""
	}
	size := int(binary.LittleEndian.Uint32(msg[21:25]))
	if size < 5 || 21+size > len(msg) {
		return "", ""
	}
	doc := msg[25 : 21+size-1]
	first := true
	for len(doc) > 0 {
		kind := doc[0]
		name, rest, ok := cstring(doc[1:])
		if !ok {
			return "", ""
		}
		n := valueSize(kind, rest)
		if n < 0 || n > len(rest) {
			return "", ""
		}
		if kind == 0x02 && n >= 5 { // string: int32 length, bytes, NUL
			value := string(rest[4 : n-1])
			if first {
				collection = value
			} else if name == "$db" {
				db = value
			}
		}
		first = false
		doc = rest[n:]
	}
	return collection, db
}

func cstring(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}

// valueSize is the encoded size of a BSON value of the given type at the start of b, or -1 if unknown.
func valueSize(kind byte, b []byte) int {
	switch kind {
	case 0x01, 0x09, 0x11, 0x12: // double, datetime, timestamp, int64
		return 8
	case 0x02, 0x0D, 0x0E: // string, JavaScript, symbol
		if len(b) < 4 {
			return -1
		}
		return 4 + int(binary.LittleEndian.Uint32(b))
	case 0x03, 0x04, 0x0F: // document, array, code with scope
		if len(b) < 4 {
			return -1
		}
		return int(binary.LittleEndian.Uint32(b))
	case 0x05: // binary
		if len(b) < 4 {
			return -1
		}
		return 5 + int(binary.LittleEndian.Uint32(b))
	case 0x07: // ObjectId
		return 12
	case 0x08: // bool
		return 1
	case 0x0A, 0x06, 0xFF, 0x7F: // null, undefined, min key, max key
		return 0
	case 0x0B: // regex: two C strings
		_, rest, ok := cstring(b)
		if !ok {
			return -1
		}
		_, rest2, ok := cstring(rest)
		if !ok {
			return -1
		}
		return len(b) - len(rest2)
	case 0x0C: // DBPointer
		if len(b) < 4 {
			return -1
		}
		return 4 + int(binary.LittleEndian.Uint32(b)) + 12
	case 0x10: // int32
		return 4
	case 0x13: // decimal128
		return 16
	}
	return -1
}
