// Command ferretdb runs FerretDB (pinned in go.mod) for local runs and tests, with the SQLite backend (the
// default) or PostgreSQL's (`-handler postgresql`), behind a small wire-protocol front that makes
// single-document writes atomic.
//
// Why the front: FerretDB 1.x executes an update as "query the documents, then write them back" without
// isolating the two steps, so concurrent `$inc`, conditional updates and findAndModify lose updates
// (measured: 50 concurrent $inc on one document left it at 5). MongoDB guarantees single-document atomicity
// and tuya-fleet's quotas, versions and outbox rely on it. With SQLite the front serialises write commands
// (one at a time, across all connections: SQLite fails with SQLITE_BUSY at a few concurrent writers); with
// PostgreSQL it serialises writes per document (doclock.go). Reads pass through concurrently; the front does
// not change message contents.
//
// The front also refuses an `update` command with more than maxUpdateStatements statements, with an error the
// driver reports. FerretDB 1.24 keeps each statement's cursor (one pooled SQLite connection) open until the
// whole command ends; its pool has 100 connections per database, so a bigger command waits for a connection
// forever, and with writes serialised the whole server stops writing. An error is better than that hang.
//
// And with SQLite it adds the `_id` index FerretDB 1.24's lookups can use (idindex.go): without it every
// `_id` lookup, update and delete scans the collection.
//
// It uses FerretDB's embeddable package rather than its cmd/ferretdb, because that command refuses to start
// unless built from FerretDB's own git checkout (it reads version files generated there).
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

const (
	maxUpdateStatements = 64

	opMsg          = 2013
	maxMessageSize = 48 << 20 // MongoDB's maxMessageSizeBytes
	flagMoreToCome = 1 << 1
)

// Commands that modify data; everything else (find, getMore, aggregate, hello, ...) runs concurrently.
var writeCommands = map[string]bool{
	"insert": true, "update": true, "delete": true, "findAndModify": true, "findandmodify": true,
	"create": true, "createIndexes": true, "drop": true, "dropDatabase": true, "dropIndexes": true,
	"renameCollection": true,
}

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	dataDir := flag.String("data-dir", "data", "directory for the SQLite databases")
	handler := flag.String("handler", "sqlite", "backend: sqlite or postgresql")
	postgresqlURL := flag.String("postgresql-url", "", "PostgreSQL connection string for -handler postgresql")
	logLevel := flag.String("log-level", "warn", "debug, info, warn or error")
	// SQLite's default in WAL mode (FULL) syncs the log to disk on every commit, and FerretDB commits every
	// statement of a write on its own: on the machines measured that sync, not FerretDB, was the write ceiling
	// (~750 commits/s with FULL against ~6,500 with NORMAL, in a plain sqlite3 loop on the same disk). NORMAL
	// in WAL mode keeps every commit across a crash or SIGKILL of this process (the log is in the page cache
	// and replayed on open); only an operating-system crash or power loss can roll back the last commits.
	// That is the trade for a local and test stack; production runs MongoDB with its own journal settings.
	synchronous := flag.String("synchronous", "normal", "SQLite's synchronous pragma: normal, or full to sync every commit")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		log.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	absData, err := filepath.Abs(*dataDir)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(absData, 0o755); err != nil {
		log.Fatal(err)
	}

	// FerretDB itself listens on a private Unix socket; only the front is reachable over TCP.
	socket := filepath.Join(os.TempDir(), fmt.Sprintf("fleet-ferretdb-%d.sock", os.Getpid()))
	_ = os.Remove(socket)
	defer os.Remove(socket)

	config := &ferretdb.Config{Listener: ferretdb.ListenerConfig{Unix: socket}, Logger: logger, Handler: *handler}
	var writes writeLocker
	var indexer *idIndexer
	switch *handler {
	case "sqlite":
		config.SQLiteURL = "file:" + absData + "/?_pragma=synchronous(" + url.QueryEscape(*synchronous) + ")"
		writes, indexer = &globalLock{}, newIDIndexer(absData, logger)
	case "postgresql":
		if *postgresqlURL == "" {
			log.Fatal("-handler postgresql needs -postgresql-url")
		}
		config.PostgreSQLURL = *postgresqlURL
		writes = newDocLocks()
	default:
		log.Fatalf("unknown -handler %q: sqlite or postgresql", *handler)
	}
	f, err := ferretdb.New(config)
	if err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	go func() {
		if err := f.Run(ctx); err != nil && ctx.Err() == nil {
			log.Fatal(err)
		}
	}()
	if err := waitForSocket(ctx, socket); err != nil {
		log.Fatal(err)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	go func() { <-ctx.Done(); ln.Close() }()
	logger.Info("FerretDB listening", "addr", *listen, "handler", *handler)

	for {
		client, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			logger.Warn("accept failed", "error", err)
			continue
		}
		go serve(client, socket, writes, indexer, logger)
	}
}

func waitForSocket(ctx context.Context, socket string) error {
	for i := 0; i < 200; i++ {
		if conn, err := net.Dial("unix", socket); err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("FerretDB did not open its socket within 10s")
}

// serve relays one client connection. Drivers send one request and wait for its reply on a connection,
// so request/reply pairs are relayed in order; a write holds the lock until its reply has been relayed.
func serve(client net.Conn, socket string, writes writeLocker, indexer *idIndexer, logger *slog.Logger) {
	defer client.Close()
	backend, err := net.Dial("unix", socket)
	if err != nil {
		logger.Warn("backend dial failed", "error", err)
		return
	}
	defer backend.Close()

	for {
		request, err := readMessage(client)
		if err != nil {
			return
		}
		if err := relay(request, client, backend, writes, indexer); err != nil {
			return
		}
	}
}

func relay(request []byte, client, backend net.Conn, writes writeLocker, indexer *idIndexer) error {
	if n := updateStatements(request); n > maxUpdateStatements {
		msg := fmt.Sprintf("update command with %d statements refused: FerretDB 1.24 deadlocks on more than "+
			"~100 (each holds a pooled connection until the command ends); send at most %d per command",
			n, maxUpdateStatements)
		_, err := client.Write(errorReply(request, msg))
		return err
	}
	write := isWrite(request)
	if write {
		defer writes.lock(request)()
	}
	if _, err := backend.Write(request); err != nil {
		return err
	}
	if moreToCome(request) { // fire-and-forget (w:0): the server sends no reply
		return nil
	}
	for {
		reply, err := readMessage(backend)
		if err != nil {
			return err
		}
		if write && indexer != nil && !moreToCome(reply) {
			indexer.afterWrite(request) // before the client hears back, so the next request finds the index
		}
		if _, err := client.Write(reply); err != nil {
			return err
		}
		if !moreToCome(reply) {
			return nil
		}
	}
}

func readMessage(r io.Reader) ([]byte, error) {
	var header [4]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return nil, err
	}
	size := int(binary.LittleEndian.Uint32(header[:]))
	if size < 16 || size > maxMessageSize {
		return nil, fmt.Errorf("invalid message length %d", size)
	}
	msg := make([]byte, size)
	copy(msg, header[:])
	if _, err := io.ReadFull(r, msg[4:]); err != nil {
		return nil, err
	}
	return msg, nil
}

func opCode(msg []byte) uint32 { return binary.LittleEndian.Uint32(msg[12:16]) }

func moreToCome(msg []byte) bool {
	return opCode(msg) == opMsg && len(msg) >= 20 && binary.LittleEndian.Uint32(msg[16:20])&flagMoreToCome != 0
}

func isWrite(msg []byte) bool { return writeCommands[commandName(msg)] }

// commandName reads the command: OP_MSG header(16) flags(4) section kind 0 (1) BSON length(4) type(1) name.
func commandName(msg []byte) string {
	if opCode(msg) != opMsg || len(msg) < 27 || msg[20] != 0 {
		return ""
	}
	name := msg[26:]
	for i, b := range name {
		if b == 0 {
			return string(name[:i])
		}
	}
	return ""
}

// updateStatements counts the statements of an `update` command sent as an OP_MSG document sequence
// (kind 1, identifier "updates"), which is how drivers send bulk writes; 0 for anything else.
func updateStatements(msg []byte) int {
	if opCode(msg) != opMsg || commandName(msg) != "update" {
		return 0
	}
	pos := 20
	for pos+5 <= len(msg) {
		kind := msg[pos]
		size := int(binary.LittleEndian.Uint32(msg[pos+1 : pos+5]))
		if size < 4 || pos+1+size > len(msg) {
			return 0
		}
		if kind == 1 {
			section := msg[pos+5 : pos+1+size]
			end := 0
			for end < len(section) && section[end] != 0 {
				end++
			}
			if string(section[:end]) == "updates" {
				return countDocuments(section[min(end+1, len(section)):])
			}
		}
		pos += 1 + size
	}
	return 0
}

func countDocuments(seq []byte) int {
	n := 0
	for len(seq) >= 5 {
		size := int(binary.LittleEndian.Uint32(seq[:4]))
		if size < 5 || size > len(seq) {
			break
		}
		seq = seq[size:]
		n++
	}
	return n
}

// errorReply is an OP_MSG reply to `request` carrying {ok: 0, errmsg, code: 2 (BadValue), codeName}.
func errorReply(request []byte, errmsg string) []byte {
	var doc []byte
	doc = append(doc, 0x01)
	doc = append(doc, "ok\x00"...)
	doc = binary.LittleEndian.AppendUint64(doc, 0) // float64 0.0
	doc = appendString(doc, "errmsg", errmsg)
	doc = append(doc, 0x10)
	doc = append(doc, "code\x00"...)
	doc = binary.LittleEndian.AppendUint32(doc, 2)
	doc = appendString(doc, "codeName", "BadValue")
	doc = append(doc, 0x00)
	body := binary.LittleEndian.AppendUint32(nil, uint32(len(doc)+4))
	body = append(body, doc...)

	reply := make([]byte, 16, 16+4+1+len(body))
	binary.LittleEndian.PutUint32(reply[0:4], uint32(16+4+1+len(body)))
	copy(reply[8:12], request[4:8]) // responseTo = the request's id
	binary.LittleEndian.PutUint32(reply[12:16], opMsg)
	reply = binary.LittleEndian.AppendUint32(reply, 0) // flag bits
	reply = append(reply, 0)                           // section kind 0: the body
	return append(reply, body...)
}

func appendString(doc []byte, name, value string) []byte {
	doc = append(doc, 0x02)
	doc = append(doc, name...)
	doc = append(doc, 0x00)
	doc = binary.LittleEndian.AppendUint32(doc, uint32(len(value)+1))
	doc = append(doc, value...)
	return append(doc, 0x00)
}
