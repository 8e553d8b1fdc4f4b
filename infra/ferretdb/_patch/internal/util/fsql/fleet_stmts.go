// tuya-fleet patch (infra/devstack/src/fleet_devstack/ferretdb_patch.py): prepared statements kept.
//
// database/sql with modernc's SQLite driver prepares (parses and plans) every statement anew for each call
// and finalizes it after: ~8% of a conditional write's CPU went there. A DB now keeps a prepared *sql.Stmt
// per SQL text (database/sql prepares it once on each pooled connection and closes it with the connection),
// and its queries and a transaction's statements run through it. SQLite re-prepares a kept statement by
// itself when the schema changes (an index created, a table dropped and created again).
//
// This folder's name starts with "_", so Go ignores it in infra/ferretdb: the file is copied into FerretDB's
// module (internal/util/fsql) when it is built.

package fsql

import (
	"context"
	"database/sql"
	"strings"
	"sync"
)

// fleetMaxStmts bounds the statements kept per database (queries differ by filter shape and `$in` sizes);
// beyond it, statements run as before.
const fleetMaxStmts = 256

// fleetStmts is a database's kept statements.
type fleetStmts struct {
	mu     sync.Mutex
	stmts  map[string]*sql.Stmt
	closed bool
}

// stmt is the kept statement for query, prepared now if need be; nil when it is not kept (a text of more
// than one statement, the bound reached, a failed prepare: the caller runs the query as before and reports
// its error). It prepares without holding the lock: preparing waits for a pooled connection.
func (c *fleetStmts) stmt(ctx context.Context, db *sql.DB, query string) *sql.Stmt {
	if c == nil || strings.Contains(query, ";") {
		return nil
	}
	c.mu.Lock()
	s, ok := c.stmts[query]
	full := c.closed || len(c.stmts) >= fleetMaxStmts
	c.mu.Unlock()
	if ok || full {
		return s
	}
	s, err := db.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if kept, ok := c.stmts[query]; ok || c.closed { // prepared meanwhile, or the database closed
		_ = s.Close()
		return kept
	}
	if c.stmts == nil {
		c.stmts = make(map[string]*sql.Stmt)
	}
	c.stmts[query] = s
	return s
}

// close closes the kept statements; none are kept after.
func (c *fleetStmts) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.stmts {
		_ = s.Close()
	}
	c.stmts, c.closed = nil, true
}

func (db *DB) fleetQuery(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if s := db.fleet.stmt(ctx, db.sqlDB, query); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return db.sqlDB.QueryContext(ctx, query, args...)
}

func (db *DB) fleetExec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s := db.fleet.stmt(ctx, db.sqlDB, query); s != nil {
		return s.ExecContext(ctx, args...)
	}
	return db.sqlDB.ExecContext(ctx, query, args...)
}

func (tx *Tx) fleetQuery(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if s := tx.fleet.stmt(ctx, tx.fleetDB, query); s != nil {
		return tx.sqlTx.StmtContext(ctx, s).QueryContext(ctx, args...)
	}
	return tx.sqlTx.QueryContext(ctx, query, args...)
}

func (tx *Tx) fleetExec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s := tx.fleet.stmt(ctx, tx.fleetDB, query); s != nil {
		return tx.sqlTx.StmtContext(ctx, s).ExecContext(ctx, args...)
	}
	return tx.sqlTx.ExecContext(ctx, query, args...)
}
