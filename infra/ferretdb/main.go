// Command ferretdb runs FerretDB (pinned in go.mod) with the SQLite backend for local runs and tests,
// behind a small wire-protocol front that makes single-document writes atomic.
//
// Why the front: FerretDB 1.x executes an update as "query the documents, then write them back" without
// isolating the two steps, so concurrent `$inc`, conditional updates and findAndModify lose updates
// (measured: 50 concurrent $inc on one document left it at 5). MongoDB guarantees single-document atomicity
// and tuya-fleet's quotas, versions and outbox rely on it. The front serialises write commands (one at a
// time, across all connections) and passes reads through concurrently; it does not touch message contents.
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
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

const (
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
	logLevel := flag.String("log-level", "warn", "debug, info, warn or error")
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

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{Unix: socket},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + absData + "/",
	})
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
	logger.Info("FerretDB listening", "addr", *listen, "data", absData)

	var writes sync.Mutex
	for {
		client, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			logger.Warn("accept failed", "error", err)
			continue
		}
		go serve(client, socket, &writes, logger)
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
func serve(client net.Conn, socket string, writes *sync.Mutex, logger *slog.Logger) {
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
		if err := relay(request, client, backend, writes); err != nil {
			return
		}
	}
}

func relay(request []byte, client, backend net.Conn, writes *sync.Mutex) error {
	if isWrite(request) {
		writes.Lock()
		defer writes.Unlock()
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

// isWrite reads the command name: OP_MSG header(16) flags(4) section kind 0 (1) BSON length(4) type(1) name.
func isWrite(msg []byte) bool {
	if opCode(msg) != opMsg || len(msg) < 27 || msg[20] != 0 {
		return false
	}
	name := msg[26:]
	for i, b := range name {
		if b == 0 {
			return writeCommands[string(name[:i])]
		}
	}
	return false
}
