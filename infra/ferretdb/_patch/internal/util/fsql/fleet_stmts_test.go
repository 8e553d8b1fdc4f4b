// tuya-fleet patch (infra/devstack/src/fleet_devstack/ferretdb_patch.py): kept statements (fleet_stmts.go)
// give the same results as statements prepared per call, across schema changes and a closed database.

package fsql

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"testing"

	_ "modernc.org/sqlite"
)

func fleetValue(t *testing.T, db *DB, id string) (v int, found bool) {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), `SELECT v FROM t WHERE id = ?`, id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		found = true
	}
	return v, found
}

func TestFleetKeptStatements(t *testing.T) {
	ctx := context.Background()
	sqlDB, err := sql.Open("sqlite", "file:"+t.TempDir()+"/kept.sqlite")
	if err != nil {
		t.Fatal(err)
	}
	db := WrapDB(sqlDB, "kept", slog.New(slog.NewTextHandler(io.Discard, nil)))
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	put := func(id string, v int) int64 {
		t.Helper()
		var n int64
		err := db.InTransaction(ctx, func(tx *Tx) error {
			res, err := tx.ExecContext(ctx, `UPDATE t SET v = ? WHERE id = ?`, v, id)
			if err != nil {
				return err
			}
			if n, err = res.RowsAffected(); err != nil || n > 0 {
				return err
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO t (id, v) VALUES (?, ?)`, id, v)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	exec(`CREATE TABLE t (id TEXT PRIMARY KEY, v INTEGER)`)
	for i := 0; i < 200; i++ { // concurrent pooled connections are not needed: each call takes one
		put(fmt.Sprint(i%50), i)
	}
	for i := 0; i < 50; i++ {
		if v, found := fleetValue(t, db, fmt.Sprint(i)); !found || v != 150+i {
			t.Fatalf("row %d: %d, %v", i, v, found)
		}
	}
	if _, found := fleetValue(t, db, "missing"); found {
		t.Fatal("found a missing row")
	}
	if n := len(db.fleet.stmts); n != 4 { // CREATE, UPDATE, INSERT, SELECT
		t.Fatalf("%d statements kept, want 4", n)
	}

	// the schema changes under the kept statements: an index, then the table dropped and made again
	exec(`CREATE INDEX t_v ON t (v)`)
	if v, _ := fleetValue(t, db, "7"); v != 157 {
		t.Fatalf("after an index: %d", v)
	}
	exec(`DROP TABLE t`)
	if _, err := db.QueryContext(ctx, `SELECT v FROM t WHERE id = ?`, "7"); err == nil {
		t.Fatal("a kept statement ran on a dropped table")
	}
	exec(`CREATE TABLE t (w TEXT, id TEXT PRIMARY KEY, v INTEGER)`)
	if n := put("7", 1); n != 0 {
		t.Fatalf("updated %d rows of an empty table", n)
	}
	if n := put("7", 2); n != 1 {
		t.Fatalf("updated %d rows, want 1", n)
	}
	if v, found := fleetValue(t, db, "7"); !found || v != 2 {
		t.Fatalf("after the table was made again: %d, %v", v, found)
	}

	// more than one statement in a text, and texts beyond the bound, run as before and are not kept
	exec(`CREATE INDEX t_w ON t (w); CREATE INDEX t_v2 ON t (v)`)
	for i := 0; i < fleetMaxStmts+10; i++ {
		var got int
		if err := db.QueryRowContext(ctx, fmt.Sprintf(`SELECT %d`, i)).Scan(&got); err != nil || got != i {
			t.Fatal(got, err)
		}
		rows, err := db.QueryContext(ctx, fmt.Sprintf(`SELECT %d + v FROM t`, i))
		if err != nil {
			t.Fatal(err)
		}
		if !rows.Next() {
			t.Fatal(rows.Err())
		}
		if err := rows.Scan(&got); err != nil || got != i+2 {
			t.Fatal(got, err)
		}
		_ = rows.Close()
	}
	if n := len(db.fleet.stmts); n != fleetMaxStmts {
		t.Fatalf("%d statements kept, want the bound %d", n, fleetMaxStmts)
	}
	for q := range db.fleet.stmts {
		if q == `CREATE INDEX t_w ON t (w); CREATE INDEX t_v2 ON t (v)` {
			t.Fatal("a text of two statements was kept")
		}
	}

	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if !db.fleet.closed || db.fleet.stmts != nil {
		t.Fatal("statements kept after Close")
	}
	if _, err := db.QueryContext(ctx, `SELECT v FROM t WHERE id = ?`, "7"); err == nil {
		t.Fatal("a query ran on a closed database")
	}
}
