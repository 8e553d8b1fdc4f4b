package main

// WAL checkpoints for the SQLite backend, run by the front between writes.
//
// SQLite checkpoints its write-ahead log from each commit that leaves more than 1,000 pages in it
// (wal_autocheckpoint), and starts the log again from its beginning only when no reader uses it. FerretDB 1.24
// runs an update as a query, whose statement (a read transaction on one pooled connection) stays open until
// the command ends, and a write transaction on another: at every commit a reader holds a snapshot, so the log
// never starts again. It grows without bound (issue 15 saw a 930 MB WAL) and, past its first 1,000 pages,
// every commit runs a checkpoint that copies that commit's pages, sorts the log's index and syncs the
// database file: 18% of the server's CPU in conditional replaces at 10k documents (profiled), most of it for
// almost nothing copied.
//
// So FerretDB's connections run with wal_autocheckpoint=0, and the front checkpoints a database after every
// checkpointEvery writes to it, and checkpointIdle after its last write, while it holds the write lock: no
// write transaction and no write command's reader are open then, the checkpoint copies the whole log, and
// the next write starts it again from the beginning. Reads outside write commands (find, aggregate) may
// still hold an older snapshot; the checkpoint then copies what it can (PASSIVE), and a later one the rest.

import (
	"database/sql"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"
)

const (
	checkpointEvery = 100                    // writes to a database between checkpoints
	checkpointIdle  = 500 * time.Millisecond // after a database's last write: checkpoint and truncate the log
)

type checkpointer struct {
	dataDir, synchronous string
	writes               writeLocker
	logger               *slog.Logger

	mu      sync.Mutex
	pending map[string]*walState // by database name
}

type walState struct {
	writes int       // since the last checkpoint
	last   time.Time // the last write
}

func newCheckpointer(dataDir, synchronous string, writes writeLocker, logger *slog.Logger) *checkpointer {
	c := &checkpointer{
		dataDir: dataDir, synchronous: synchronous, writes: writes, logger: logger,
		pending: map[string]*walState{},
	}
	go c.idle()
	return c
}

// afterWrite runs after a write command's reply, under the write lock.
func (c *checkpointer) afterWrite(request []byte) {
	_, db := commandTarget(request)
	if db == "" {
		return
	}
	c.mu.Lock()
	s := c.pending[db]
	if s == nil {
		s = &walState{}
		c.pending[db] = s
	}
	s.writes++
	s.last = time.Now()
	due := s.writes >= checkpointEvery
	if due {
		delete(c.pending, db)
	}
	c.mu.Unlock()
	if due {
		c.checkpoint(db, "PASSIVE")
	}
}

// idle checkpoints the databases written to at least checkpointIdle ago, and truncates their logs to zero.
func (c *checkpointer) idle() {
	for range time.Tick(checkpointIdle / 2) {
		var due []string
		c.mu.Lock()
		for db, s := range c.pending {
			if time.Since(s.last) >= checkpointIdle {
				due = append(due, db)
				delete(c.pending, db)
			}
		}
		c.mu.Unlock()
		if len(due) == 0 {
			continue
		}
		unlock := c.writes.lock(nil)
		for _, db := range due {
			c.checkpoint(db, "TRUNCATE")
		}
		unlock()
	}
}

// checkpoint runs one on a connection of its own, opened and closed again: a database can be dropped (its file
// deleted) at any time, and FerretDB failed to re-create a name while a connection to the old file was open.
// TRUNCATE waits for no reader (busy_timeout 0): when one holds the log, it copies what it can, as PASSIVE.
func (c *checkpointer) checkpoint(db, mode string) {
	path := filepath.Join(c.dataDir, db+".sqlite")
	if _, err := os.Stat(path); err != nil {
		return // dropped, or never created
	}
	dsn := "file:" + path + "?mode=rw&_pragma=busy_timeout(0)&_pragma=synchronous(" + url.QueryEscape(c.synchronous) + ")"
	conn, err := sql.Open("sqlite", dsn)
	if err != nil {
		c.logger.Warn("WAL checkpoint: open failed", "db", db, "error", err)
		return
	}
	defer conn.Close()
	var busy, logPages, copied int
	if err := conn.QueryRow("PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &logPages, &copied); err != nil {
		c.logger.Warn("WAL checkpoint failed", "db", db, "error", err) // the next one tries again
		return
	}
	c.logger.Debug("WAL checkpoint", "db", db, "mode", mode, "busy", busy, "log_pages", logPages, "copied", copied)
}
