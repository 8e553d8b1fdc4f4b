"""A build-time patch to FerretDB 1.24's SQLite backend: answer more queries from SQLite indexes.

FerretDB 1.24 turns a filter into a SQL `WHERE` only when the filter is exactly `{_id: <string or ObjectId>}`.
Any other filter reads the whole table and filters in Go, and every sort other than `$natural` reads all
matches and sorts them in Go. So a conditional write such as `{_id: device, version: 7}`, a batched lookup
`{_id: {$in: [...]}}` or a page of a list (`{product_id: p, _id: {$gt: after}}` sorted by `_id`, limit n)
costs a scan of the collection, where MongoDB reads an index. The patch:

1. Narrowing (any filter): `_id` equality is pushed down whatever else the filter holds, `_id: {$in: [strings
   or ObjectIds]}` as `IN (...)`, and string ranges of `_id` (`$gt`/`$gte`/`$lt`/`$lte`). It only narrows the
   rows SQLite returns: every FerretDB handler filters the returned documents again with the full filter.
2. Exact pushdown: a filter made only of string ranges or string equality on `_id`, and equality to a string
   or a bool or number ranges on fields of non-unique indexes (dotted paths too), becomes the whole `WHERE`,
   matching exactly the documents MongoDB matches: values compare as SQL values with their sjson type checked
   (a string never equals an ObjectId or a number, `true` never equals 1), and it is used only while no
   document holds an array on any of those paths (MongoDB would match array elements); a partial index of
   such documents, created with each index, makes that check one index probe. Then a sort on `_id` (given an
   `_id` string condition) and the limit run in SQLite too, so a page reads about `limit` rows of an index.
   With no statistics SQLite may pick the least selective index, so the index led by the filter's first
   equality field (and `_id`) is named, like MongoDB's `hint`: callers put their most selective field first.
3. Non-unique indexes FerretDB creates index those SQL values (`_ferretdb_sjson->>'$.path'`) instead of JSON
   texts, so the exact pushdown can use them; unique indexes are unchanged. Indexes an unpatched build created
   still answer correctly, only without an index (re-create them: drop the local database).
4. The handler passes dotted filter keys, `_id` sorts and the limit to the backend, which uses the sort and
   the limit only when its pushdown is exact (else it narrows as before; the handler sorts and limits in Go).

The PostgreSQL backend (`-handler postgresql`, fleet_devstack's FLEET_DB_BACKEND=postgresql) gets two changes,
so that the handler changes of 4 stay correct there and `_id` lookups use its index:

5. Exact pushdown, as 2 for SQLite: a filter made only of string ranges or string equality on `_id` and
   string or bool equality on fields of non-unique indexes becomes the whole `WHERE`, in the terms of
   FerretDB's indexes (`_jsonb->'a'->'b' = $n`, jsonb values), with the sort on `_id` and the limit, while
   no document holds an array on those paths nor a non-string `_id` (one probe of a partial index each,
   created with each index). jsonb equality to a string also matches an ObjectId's hex, so a 24-hex-digit
   string gets a check of the sjson type too; no other condition does (the planner cannot estimate such
   checks and, with them, sorted all matches instead of reading the `(field, _id)` index in order).
   The cluster's collation is C (initdb --locale=C): strings compare bytewise, as in MongoDB.
6. Otherwise FerretDB's own narrowing `WHERE` as before, with a sort pushed down only when it is `$natural`
   (the handler now also hands over `_id` sorts, which would fail there) and a limit only when the filter
   is empty (its `WHERE` only narrows, so a limit could cut off matches); and there `_id` equality to a
   string or an ObjectId (plain, `$eq` or `$in`) becomes `_jsonb->'_id' = $n`, the expression of the
   unique `_id` index, instead of `_jsonb->$k @> $v`, which no index answers.

Two changes cut the CPU every command costs (profiled with the front's `-debug-addr`, conditional replaces at
10k documents):

7. fsql builds a SQL statement's debug log record only when debug logging is on (it formatted the whole
   document text into a record that was then dropped: ~3% of the CPU).
8. resource.Track/Untrack, a leak check of FerretDB's debug builds (a pprof stack and a finalizer per
   iterator, row set and transaction: ~5%), do nothing in release builds.

One change cuts the CPU of every document read and written:

9. sjson (the SQLite backend's document text, and how the PostgreSQL backend reads its jsonb) in one pass:
   FerretDB's Unmarshal runs a json.Decoder per field and decodes each nested object again at every level,
   its Marshal a json.Marshal per key and scalar. Unmarshal and Marshal now try the one-pass code of
   infra/ferretdb/_patch/internal/handler/sjson/fleet_fast.go first, which returns exactly what FerretDB's
   code returns (byte for byte, document for document) or declines, and then FerretDB's code runs as before
   (kept as ferretUnmarshal and ferretMarshal). fleet_fast_test.go, beside it, holds the two to that on
   generated documents of every type, the shapes tuya-fleet's services write, texts as PostgreSQL prints
   them and mutated texts; tests/integration/foundation/test_ferretdb_sjson.py runs it in the patched module.

At build time the module is copied out of Go's module cache, these files are patched in the copy, the Go
files under infra/ferretdb/_patch/ are added at the same paths (Go ignores a folder whose name starts with
"_", so they are not part of infra/ferretdb's own module), and the build uses the copy through a `replace`
(`build.ferretdb_binary`); no FerretDB source is kept in this repository. If FerretDB's code no longer
matches, or it ships a file the patch adds, the build fails loudly.
"""

from __future__ import annotations

from pathlib import Path

MARK = "tuya-fleet patch (infra/devstack/src/fleet_devstack/ferretdb_patch.py)"

COLLECTION = "internal/backends/sqlite/collection.go"
REGISTRY = "internal/backends/sqlite/metadata/registry.go"
FIND = "internal/handler/msg_find.go"
EXPLAIN = "internal/handler/msg_explain.go"
EMBEDDED = "ferretdb/ferretdb.go"
CONTRACT = "internal/backends/collection.go"
PG_COLLECTION = "internal/backends/postgresql/collection.go"
PG_QUERY = "internal/backends/postgresql/query.go"
PG_REGISTRY = "internal/backends/postgresql/metadata/registry.go"
FSQL_DB = "internal/util/fsql/db.go"
FSQL_TX = "internal/util/fsql/tx.go"
RESOURCE = "internal/util/resource/resource.go"
SJSON = "internal/handler/sjson/sjson.go"

_OLD_ID_WHERE = """\
	if params.Filter.Len() == 1 {
		v, _ := params.Filter.Get("_id")
		switch v.(type) {
		case string, types.ObjectID:
%s			whereClause = fmt.Sprintf(` WHERE %%s = ?`, metadata.IDColumn)
			args = []any{string(must.NotFail(sjson.MarshalSingleValue(v)))}
		}
	}
"""

_SORT_CASE = """\
	case params.Sort.Len() == 1:
		if params.Sort.Keys()[0] != "$natural" {
			break
		}
"""
_SORT_CASE_NEW = """\
	case params.Sort.Len() == 1:
		if params.Sort.Keys()[0] == "_id" { // %MARK%: the backend sorts when it can do so exactly
			qp.Sort = params.Sort
			break
		}
		if params.Sort.Keys()[0] != "$natural" {
			break
		}
"""
_LIMIT = """\
	if !h.DisablePushdown && params.Filter.Len() == 0 && params.Sort.Len() == 0 && params.Skip == 0 {
"""
_LIMIT_NEW = """\
	// %MARK%: the backend limits only when its filter and sort pushdown are exact, and it only knows the
	// sort when it was handed over above (no sort, `$natural` or `_id`)
	if !h.DisablePushdown && params.Skip == 0 && (params.Sort.Len() == 0 || qp.Sort != nil) {
"""

# file -> [(FerretDB's code, the patched code, how many times it occurs)]
REPLACEMENTS: dict[str, list[tuple[str, str, int]]] = {
    COLLECTION: [
        (  # Query
            (_OLD_ID_WHERE % "")
            + """
	q += whereClause
	q += prepareOrderByClause(params.Sort)

	if params.Limit != 0 {
		q += ` LIMIT ?`
		args = append(args, params.Limit)
	}
""",
            """\
	// %MARK%
	plan, err := fleetQuerySQL(ctx, db, meta, params.Filter, params.Sort, params.Limit)
	if err != nil {
		return nil, lazyerrors.Error(err)
	}
	whereClause, args = plan.where, plan.args
	q += plan.indexedBy + whereClause + plan.tail
""",
            1,
        ),
        (  # Explain: the same plan, so tests can see it
            (_OLD_ID_WHERE % "\t\t\tfilterPushdown = true\n")
            + """
	orderByClause := prepareOrderByClause(params.Sort)
	sortPushdown := orderByClause != ""

	q := `EXPLAIN QUERY PLAN ` + selectClause + whereClause + orderByClause

	var limitPushdown bool

	if params.Limit != 0 {
		q += ` LIMIT ?`
		args = append(args, params.Limit)
		limitPushdown = true
	}
""",
            """\
	// %MARK%
	plan, err := fleetQuerySQL(ctx, db, meta, params.Filter, params.Sort, params.Limit)
	if err != nil {
		return nil, lazyerrors.Error(err)
	}
	whereClause, args, filterPushdown = plan.where, plan.args, plan.filterPushdown
	sortPushdown, limitPushdown := plan.sortPushdown, plan.limitPushdown
	q := `EXPLAIN QUERY PLAN ` + selectClause + plan.indexedBy + whereClause + plan.tail
""",
            1,
        ),
    ],
    REGISTRY: [
        (
            """\
			columns[i] = fmt.Sprintf("%s->%s", DefaultColumn, strings.Join(fields, "->"))
""",
            """\
			columns[i] = fmt.Sprintf("%s->%s", DefaultColumn, strings.Join(fields, "->"))
			if column, ok := FleetIndexColumn(key.Field); ok && !index.Unique { // %MARK%
				columns[i] = column
			}
""",
            1,
        ),
        (
            """\
		created = append(created, index.Name)
""",
            """\
		if err := fleetArraySentinels(ctx, db, c.TableName, index); err != nil { // %MARK%
			_ = r.indexesDrop(ctx, dbName, collectionName, created)
			return lazyerrors.Error(err)
		}

		created = append(created, index.Name)
""",
            1,
        ),
    ],
    FIND: [(_SORT_CASE, _SORT_CASE_NEW, 1), (_LIMIT, _LIMIT_NEW, 1)],
    EXPLAIN: [(_SORT_CASE, _SORT_CASE_NEW, 1), (_LIMIT, _LIMIT_NEW, 1)],
    CONTRACT: [  # Query's and Explain's checks of the sort: `_id` too
        (
            """\
		sortValue := params.Sort.Map()["$natural"].(int64)
""",
            """\
		sortValue := params.Sort.Values()[0].(int64) // %MARK%: `$natural` or `_id`
""",
            2,
        )
    ],
    PG_COLLECTION: [
        (  # Query
            """\
	var placeholder metadata.Placeholder

	var where string
	var args []any

	where, args, err = prepareWhereClause(&placeholder, params.Filter)
	if err != nil {
		return nil, lazyerrors.Error(err)
	}

	q += where

	sort, sortArgs := prepareOrderByClause(params.Sort)

	q += sort
	args = append(args, sortArgs...)

	if params.Limit != 0 {
		q += fmt.Sprintf(` LIMIT %s`, placeholder.Next())
		args = append(args, params.Limit)
	}
""",
            """\
	// %MARK%
	plan, err := fleetQueryPlan(ctx, p, c.dbName, meta, params.Filter, params.Sort, params.Limit)
	if err != nil {
		return nil, lazyerrors.Error(err)
	}

	q += plan.where + plan.tail
	args := plan.args
""",
            1,
        ),
        (  # Explain
            """\
	var placeholder metadata.Placeholder

	where, args, err := prepareWhereClause(&placeholder, params.Filter)
	if err != nil {
		return nil, lazyerrors.Error(err)
	}

	res.FilterPushdown = where != ""

	q += where

	sort, sortArgs := prepareOrderByClause(params.Sort)
	res.SortPushdown = sort != ""

	q += sort
	args = append(args, sortArgs...)

	if params.Limit != 0 {
		q += fmt.Sprintf(` LIMIT %s`, placeholder.Next())
		args = append(args, params.Limit)
		res.LimitPushdown = true
	}
""",
            """\
	// %MARK%
	plan, err := fleetQueryPlan(ctx, p, c.dbName, meta, params.Filter, params.Sort, params.Limit)
	if err != nil {
		return nil, lazyerrors.Error(err)
	}

	res.FilterPushdown = plan.where != ""
	res.SortPushdown, res.LimitPushdown = plan.sortPushdown, plan.limitPushdown
	q += plan.where + plan.tail
	args := plan.args
""",
            1,
        ),
    ],
    PG_REGISTRY: [
        (
            """\
		created = append(created, index.Name)
""",
            """\
		created = append(created, index.Name)

		if err = fleetArraySentinels(ctx, p, dbName, c.TableName, index); err != nil { // %MARK%
			_ = r.indexesDrop(ctx, p, dbName, collectionName, created)
			return lazyerrors.Error(err)
		}
""",
            1,
        )
    ],
    PG_QUERY: [
        (
            """\
	v := must.NotFail(sort.Get("$natural"))
""",
            """\
	v, err := sort.Get("$natural") // %MARK%: other sorts (`_id`) are left to the handler
	if err != nil {
		return "", nil
	}
""",
            1,
        ),
        (
            """\
		if strings.HasPrefix(rootKey, "$") {
			continue
		}
""",
            """\
		if strings.HasPrefix(rootKey, "$") {
			continue
		}

		if rootKey == "_id" { // %MARK%: in the terms of the `_id` index
			if f, a, ok := fleetIDWhere(p, rootVal); ok {
				filters = append(filters, f)
				args = append(args, a...)

				continue
			}
		}
""",
            1,
        ),
    ],
    EMBEDDED: [
        (
            """\
			BatchSize:               100,
""",
            """\
			BatchSize:               100,
			EnableNestedPushdown:    true, // %MARK%: dotted keys reach the backend (it decides what to push)
""",
            1,
        )
    ],
}

# 7. fsql logs every SQL statement at debug level, but builds the record first whatever the level: `l.With`
# formats the arguments (the whole document text, quoted) and Sprintf the statement, ~3% of a write's CPU.
for _file, _db in ((FSQL_DB, "db"), (FSQL_TX, "tx")):
    REPLACEMENTS[_file] = [
        (
            f"""\
	{_db}.l.With(fields...).DebugContext(ctx, fmt.Sprintf("{arrow} %s", query))
""",
            f"""\
	if {_db}.l.Enabled(ctx, slog.LevelDebug) {{ // %MARK%: build the record only when it is logged
		{_db}.l.With(fields...).DebugContext(ctx, fmt.Sprintf("{arrow} %s", query))
	}}
""",
            3,
        )
        for arrow in (">>>", "<<<")
    ]

# 8. resource.Track/Untrack, called for every iterator, cursor, row set and transaction, add the object to a
# pprof profile (capturing its stack) and set a finalizer that panics if it is never untracked: a leak
# check for FerretDB's debug builds, with no other use, ~5% of a write's CPU. Release builds skip it.
REPLACEMENTS[RESOURCE] = [
    (
        f"""\
func {name}(obj any, token *Token) {{
	checkArgs(obj, token)
""",
        f"""\
func {name}(obj any, token *Token) {{
	if !debugbuild.Enabled {{ // %MARK%: the leak check is for debug builds
		return
	}}

	checkArgs(obj, token)
""",
        1,
    )
    for name in ("Track", "Untrack")
]

# 9. sjson: the one-pass code first (infra/ferretdb/_patch/internal/handler/sjson/fleet_fast.go); FerretDB's
# own Unmarshal and Marshal stay, renamed, for what it declines and for its differential test.
REPLACEMENTS[SJSON] = [
    (
        """\
func Unmarshal(data []byte) (*types.Document, error) {
""",
        """\
func Unmarshal(data []byte) (*types.Document, error) {
	if d, ok := fleetUnmarshal(data); ok { // %MARK%: fleet_fast.go
		return d, nil
	}

	return ferretUnmarshal(data)
}

// ferretUnmarshal is FerretDB's Unmarshal (%MARK%).
func ferretUnmarshal(data []byte) (*types.Document, error) {
""",
        1,
    ),
    (
        """\
func Marshal(d *types.Document) ([]byte, error) {
	if d == nil {
		panic("v is nil")
	}

	schema, err := marshalSchemaForDoc(d)
""",
        """\
func Marshal(d *types.Document) ([]byte, error) {
	if d == nil {
		panic("v is nil")
	}

	if b, ok := fleetMarshal(d); ok { // %MARK%: fleet_fast.go
		return b, nil
	}

	return ferretMarshal(d)
}

// ferretMarshal is FerretDB's Marshal (%MARK%).
func ferretMarshal(d *types.Document) ([]byte, error) {
	schema, err := marshalSchemaForDoc(d)
""",
        1,
    ),
]

# Go code appended to a file
APPENDED: dict[str, str] = {
    PG_COLLECTION: """
// %MARK%:
// fleetPlan is how a query runs in PostgreSQL: its WHERE, its ORDER BY and LIMIT (tail) and their arguments.
type fleetPlan struct {
	where, tail                 string
	args                        []any
	sortPushdown, limitPushdown bool
}

type fleetQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// fleetQueryPlan is the exact pushdown (filter, `_id` sort and limit) when fleetExact allows it and no
// document holds an array on the filter's paths; else FerretDB's narrowing WHERE, as before.
func fleetQueryPlan(
	ctx context.Context, db fleetQuerier, schema string, meta *metadata.Collection,
	filter, order *types.Document, limit int64,
) (*fleetPlan, error) {
	plan := new(fleetPlan)
	var placeholder metadata.Placeholder
	sortable := order.Len() == 0 || (order.Len() == 1 && order.Keys()[0] == "_id")
	conds, args, orderable, probes, exact := fleetExact(&placeholder, filter, fleetIndexedFields(meta))
	exact = exact && sortable && !meta.Capped() && (order.Len() == 0 || orderable)
	for _, probe := range probes { // each answered from a partial index (fleetArraySentinels)
		if !exact {
			break
		}
		q := fmt.Sprintf(`SELECT EXISTS (SELECT 1 FROM %s WHERE %s)`,
			pgx.Identifier{schema, meta.TableName}.Sanitize(), probe)
		var arrays bool
		if err := db.QueryRow(ctx, q).Scan(&arrays); err != nil {
			return nil, lazyerrors.Error(err)
		}
		exact = !arrays
	}

	if !exact {
		var fresh metadata.Placeholder
		where, whereArgs, err := prepareWhereClause(&fresh, filter)
		if err != nil {
			return nil, lazyerrors.Error(err)
		}
		plan.where, plan.args = where, whereArgs
		plan.tail, _ = prepareOrderByClause(order)
		plan.sortPushdown = plan.tail != ""
		natural := order.Len() == 0 || (order.Len() == 1 && order.Keys()[0] == "$natural")
		if limit != 0 && filter.Len() == 0 && natural { // the narrowing WHERE is exact only when empty
			plan.tail += fmt.Sprintf(` LIMIT %s`, fresh.Next())
			plan.args = append(plan.args, limit)
			plan.limitPushdown = true
		}
		return plan, nil
	}

	if len(conds) > 0 {
		plan.where = ` WHERE ` + strings.Join(conds, ` AND `)
	}
	plan.args = args
	if order.Len() == 1 {
		plan.tail = ` ORDER BY ` + metadata.IDColumn
		if v, _ := order.Get("_id"); v == int64(-1) {
			plan.tail += ` DESC`
		}
		plan.sortPushdown = true
	}
	if limit != 0 {
		plan.tail += fmt.Sprintf(` LIMIT %s`, placeholder.Next())
		plan.args = append(plan.args, limit)
		plan.limitPushdown = true
	}
	return plan, nil
}

// fleetExact is the SQL conditions matching exactly the documents the filter matches, provided no document
// matches any of `probes` (an array on a filtered path, a non-string `_id`); ok is false for filters of
// any other shape. `orderable`: every match has a string `_id`, so PostgreSQL's order of the `_id` values
// (C collation) is MongoDB's.
func fleetExact(
	p *metadata.Placeholder, filter *types.Document, indexed map[string]bool,
) (conds []string, args []any, orderable bool, probes []string, ok bool) {
	for i, k := range filter.Keys() {
		column, named := metadata.FleetColumn(k)
		if !named {
			return nil, nil, false, nil, false
		}
		switch v := filter.Values()[i].(type) {
		case string, bool:
			if k == "_id" {
				_, isString := v.(string)
				orderable = orderable || isString
			} else if !indexed[k] {
				return nil, nil, false, nil, false
			}
			// jsonb equality to a string matches strings and ObjectIds (kept as their hex), to a bool only
			// bools: the type check, whose selectivity the planner cannot estimate, only where it matters
			if str, isString := v.(string); isString && fleetMayBeObjectID(str) {
				conds = append(conds, metadata.FleetTypeIs(k, "string"))
			}
			conds = append(conds, column+` = `+p.Next())
			args = append(args, must.NotFail(sjson.MarshalSingleValue(v)))
		case *types.Document:
			if k != "_id" || v.Len() == 0 {
				return nil, nil, false, nil, false
			}
			ops := map[string]string{"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
			// jsonb orders values of other types around strings: exact while every `_id` is a string
			probes = append(probes, metadata.FleetIDNotString())
			for j, op := range v.Keys() {
				bound, isString := v.Values()[j].(string)
				if ops[op] == "" || !isString {
					return nil, nil, false, nil, false
				}
				conds = append(conds, fmt.Sprintf(`%s %s %s`, column, ops[op], p.Next()))
				args = append(args, must.NotFail(sjson.MarshalSingleValue(bound)))
			}
			orderable = true
		default:
			return nil, nil, false, nil, false
		}
		if k != "_id" {
			for _, path := range metadata.FleetPrefixes(k) {
				probes = append(probes, metadata.FleetArrayCondition(path))
			}
		}
	}
	return conds, args, orderable, probes, true
}

// fleetMayBeObjectID holds for 24 lowercase hex digits, the form sjson keeps an ObjectId in.
func fleetMayBeObjectID(s string) bool {
	if len(s) != 24 {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

// fleetIndexedFields is the fields of the collection's non-unique indexes (they have array sentinels).
func fleetIndexedFields(meta *metadata.Collection) map[string]bool {
	fields := map[string]bool{}
	for _, index := range meta.Indexes {
		if index.Unique {
			continue
		}
		for _, key := range index.Key {
			if _, ok := metadata.FleetColumn(key.Field); ok && key.Field != "_id" {
				fields[key.Field] = true
			}
		}
	}
	return fields
}
""",
    PG_REGISTRY: """
// %MARK%:
// fleetSegments is a dotted field's path segments, when each is a plain name (no quoting needed).
func fleetSegments(field string) ([]string, bool) {
	segments := strings.Split(field, ".")
	for _, s := range segments {
		if s == "" {
			return nil, false
		}
		for i, r := range s {
			if r != '_' && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (i == 0 || r < '0' || r > '9') {
				return nil, false
			}
		}
	}
	return segments, true
}

// FleetColumn is a field's jsonb value, written as FerretDB's indexes write it (`_jsonb->'a'->'b'`).
func FleetColumn(field string) (string, bool) {
	segments, ok := fleetSegments(field)
	if !ok {
		return "", false
	}
	return DefaultColumn + "->'" + strings.Join(segments, "'->'") + "'", true
}

// FleetTypeIs is the condition that the field's value has the sjson type t (sjson keeps types in `$s`).
func FleetTypeIs(field, t string) string {
	segments, _ := fleetSegments(field)
	path := strings.Join(segments, `'->'$s'->'p'->'`)
	return fmt.Sprintf(`%s->'$s'->'p'->'%s'->>'t' = '%s'`, DefaultColumn, path, t)
}

// FleetPrefixes is a dotted path and its parents ("a.b": "a", "a.b").
func FleetPrefixes(field string) []string {
	segments := strings.Split(field, ".")
	prefixes := make([]string, len(segments))
	for i := range segments {
		prefixes[i] = strings.Join(segments[:i+1], ".")
	}
	return prefixes
}

// FleetIDNotString holds for documents whose `_id` is not a string.
func FleetIDNotString() string {
	return DefaultColumn + `->'$s'->'p'->'_id'->>'t' <> 'string'`
}

// FleetArrayCondition holds for documents with an array at the path.
func FleetArrayCondition(path string) string {
	column, _ := FleetColumn(path)
	return fmt.Sprintf(`jsonb_typeof(%s) = 'array'`, column)
}

// fleetArraySentinels adds, for each path of a non-unique index's fields, a partial index of the documents
// holding an array there, and one of those with a non-string `_id`: the exact pushdown checks with one
// probe each that there are none.
func fleetArraySentinels(ctx context.Context, p *pgxpool.Pool, schema, table string, index IndexInfo) error {
	if index.Unique {
		return nil
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(table))
	q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s ON %s ((%s)) WHERE %s`,
		pgx.Identifier{fmt.Sprintf("fleet_ids_%08x", h.Sum32())}.Sanitize(),
		pgx.Identifier{schema, table}.Sanitize(), IDColumn, FleetIDNotString())
	if _, err := p.Exec(ctx, q); err != nil {
		return err
	}
	for _, key := range index.Key {
		if _, ok := FleetColumn(key.Field); !ok || key.Field == "_id" {
			continue
		}
		for _, path := range FleetPrefixes(key.Field) {
			h := fnv.New32a()
			_, _ = h.Write([]byte(table + "\\x00" + path))
			name := fmt.Sprintf("fleet_arrays_%08x", h.Sum32())
			q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s ON %s ((%s)) WHERE %s`,
				pgx.Identifier{name}.Sanitize(), pgx.Identifier{schema, table}.Sanitize(), IDColumn,
				FleetArrayCondition(path))
			if _, err := p.Exec(ctx, q); err != nil {
				return err
			}
		}
	}
	return nil
}
""",
    PG_QUERY: """
// %MARK%:
// fleetIDWhere is `_id = v`, `{$eq: v}` or `{$in: [v, ...]}` of strings and ObjectIds as a condition on the
// expression of the collection's unique `_id` index; ok is false for any other `_id` condition.
func fleetIDWhere(p *metadata.Placeholder, cond any) (string, []any, bool) {
	values := []any{cond}
	if d, isDoc := cond.(*types.Document); isDoc {
		if d.Len() != 1 {
			return "", nil, false
		}
		switch d.Keys()[0] {
		case "$eq":
			values = []any{d.Values()[0]}
		case "$in":
			in, isArray := d.Values()[0].(*types.Array)
			if !isArray || in.Len() == 0 || in.Len() > 1000 {
				return "", nil, false
			}
			values = make([]any, in.Len())
			for i := range values {
				values[i] = must.NotFail(in.Get(i))
			}
		default:
			return "", nil, false
		}
	}
	for _, v := range values {
		switch v.(type) {
		case string, types.ObjectID:
		default:
			return "", nil, false
		}
	}
	marks := make([]string, len(values)) // numbered only now: a refusal above must not use up placeholders
	args := make([]any, len(values))
	for i, v := range values {
		marks[i], args[i] = p.Next(), must.NotFail(sjson.MarshalSingleValue(v))
	}
	if len(marks) == 1 {
		return fmt.Sprintf(`%s = %s`, metadata.IDColumn, marks[0]), args, true
	}
	return fmt.Sprintf(`%s IN (%s)`, metadata.IDColumn, strings.Join(marks, ", ")), args, true
}
""",
    COLLECTION: """
// %MARK%:
// fleetWhere narrows a filter's rows by its `_id` condition (equality, `$in` or a string range), whatever
// else the filter holds; empty when there is none. Handlers filter every returned row again.
func fleetWhere(filter *types.Document) (string, []any) {
	id, ok := fleetTopLevelID(filter)
	if !ok {
		return "", nil
	}
	switch v := id.(type) {
	case string, types.ObjectID:
		arg := string(must.NotFail(sjson.MarshalSingleValue(v)))
		return fmt.Sprintf(` WHERE %s = ?`, metadata.IDColumn), []any{arg}
	case *types.Document:
		if in, ok := fleetIDIn(v); ok {
			marks := strings.TrimSuffix(strings.Repeat("?, ", len(in)), ", ")
			return fmt.Sprintf(` WHERE %s IN (%s)`, metadata.IDColumn, marks), in
		}
		if conds, args, ok := fleetIDRange(v); ok {
			return ` WHERE ` + strings.Join(conds, ` AND `), args
		}
	}
	return "", nil
}

// fleetTopLevelID is the filter's `_id` condition, if it has exactly one.
func fleetTopLevelID(filter *types.Document) (any, bool) {
	at := -1
	for i, k := range filter.Keys() {
		if k == "_id" {
			if at >= 0 {
				return nil, false
			}
			at = i
		}
	}
	if at < 0 {
		return nil, false
	}
	return filter.Values()[at], true
}

// fleetIDIn is the SQL arguments of `{$in: [...]}` when every element is a string or an ObjectId.
func fleetIDIn(cond *types.Document) ([]any, bool) {
	if cond.Len() != 1 || cond.Keys()[0] != "$in" {
		return nil, false
	}
	in, ok := cond.Values()[0].(*types.Array)
	if !ok || in.Len() == 0 || in.Len() > 1000 {
		return nil, false
	}
	args := make([]any, 0, in.Len())
	for i := 0; i < in.Len(); i++ {
		v := must.NotFail(in.Get(i))
		switch v.(type) {
		case string, types.ObjectID:
			args = append(args, string(must.NotFail(sjson.MarshalSingleValue(v))))
		default:
			return nil, false
		}
	}
	return args, true
}

// fleetIDRange is the SQL conditions for `{$gt|$gte|$lt|$lte: <string>, ...}` on `_id`: exactly the
// documents MongoDB matches (a string bound matches strings only, compared bytewise), answered from the
// index the front adds on `_id`'s SQL value (infra/ferretdb/idindex.go).
func fleetIDRange(cond *types.Document) ([]string, []any, bool) {
	if cond.Len() == 0 {
		return nil, nil, false
	}
	ops := map[string]string{"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
	conds := []string{metadata.FleetTypeIs("_id", "string")}
	args := make([]any, 0, cond.Len())
	for i, k := range cond.Keys() {
		op, known := ops[k]
		bound, isString := cond.Values()[i].(string)
		if !known || !isString {
			return nil, nil, false
		}
		conds = append(conds, fmt.Sprintf(`%s %s ?`, metadata.FleetValue("_id"), op))
		args = append(args, bound)
	}
	return conds, args, true
}

// fleetNumberRange is the SQL conditions for `{$gt|$gte|$lt|$lte: <bound>, ...}` on a field, all numbers or
// all dates: the documents MongoDB matches (numbers only, compared as numbers, or dates only, compared as
// times; a bool or a string never matches). sjson keeps a date as its Unix milliseconds.
func fleetNumberRange(field string, cond *types.Document) ([]string, []any, bool) {
	if cond.Len() == 0 {
		return nil, nil, false
	}
	ops := map[string]string{"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
	var conds []string
	args := make([]any, 0, cond.Len())
	kind := ""
	for i, k := range cond.Keys() {
		op, known := ops[k]
		if !known {
			return nil, nil, false
		}
		var arg any
		var boundKind string
		switch bound := cond.Values()[i].(type) {
		case int32, int64:
			arg, boundKind = bound, "number"
		case float64:
			if bound != bound { // NaN: MongoDB's ordering of it is not SQLite's
				return nil, nil, false
			}
			arg, boundKind = bound, "number"
		case interface{ UnixMilli() int64 }: // time.Time: a BSON date
			arg, boundKind = bound.UnixMilli(), "date"
		default:
			return nil, nil, false
		}
		if kind != "" && kind != boundKind {
			return nil, nil, false
		}
		kind = boundKind
		conds = append(conds, fmt.Sprintf(`%s %s ?`, metadata.FleetValue(field), op))
		args = append(args, arg)
	}
	isType := metadata.FleetTypeIs(field, "date")
	if kind == "number" {
		isType = strings.Replace(isType, `= 'date'`, `IN ('int', 'long', 'double')`, 1)
	}
	return append([]string{isType}, conds...), args, true
}

// fleetSQL is how a query runs in SQLite.
type fleetSQL struct {
	indexedBy, where, tail                      string
	args                                        []any
	filterPushdown, sortPushdown, limitPushdown bool
}

// fleetQuerySQL is the WHERE, ORDER BY and LIMIT for a query: exact when fleetExact says so and no document
// holds an array on the filter's paths; else the `_id` narrowing, with `$natural` order only, as before.
func fleetQuerySQL(
	ctx context.Context, db *fsql.DB, meta *metadata.Collection, filter, order *types.Document, limit int64,
) (*fleetSQL, error) {
	s := new(fleetSQL)
	conds, args, orderable, paths, exact := fleetExact(filter, fleetIndexedFields(meta))
	if exact && len(paths) > 0 {
		noArrays, err := fleetNoArrays(ctx, db, meta.TableName, paths)
		if err != nil {
			return nil, err
		}
		exact = noArrays
	}
	if exact {
		if len(conds) > 0 {
			s.where, s.args = ` WHERE `+strings.Join(conds, ` AND `), args
		}
		s.indexedBy = fleetIndexedBy(meta, filter)
	} else {
		s.where, s.args = fleetWhere(filter)
	}
	s.filterPushdown = s.where != ""
	limitable := exact
	switch {
	case order.Len() == 0:
	case order.Len() == 1 && order.Keys()[0] == "$natural":
		s.tail = prepareOrderByClause(order)
	case order.Len() == 1 && order.Keys()[0] == "_id" && exact && orderable:
		s.tail = ` ORDER BY ` + metadata.FleetValue("_id")
		if v, _ := order.Get("_id"); v == int64(-1) {
			s.tail += ` DESC`
		}
	default:
		limitable = false
	}
	s.sortPushdown = s.tail != ""
	if limit != 0 && limitable {
		s.tail += ` LIMIT ?`
		s.args = append(s.args, limit)
		s.limitPushdown = true
	}
	return s, nil
}

// fleetExact is the SQL conditions matching exactly the documents the filter matches, provided no document
// holds an array on `paths`; ok is false for filters of any other shape. `orderable`: every match has a
// string `_id`, so SQL's order of `_id` values is MongoDB's.
func fleetExact(
	filter *types.Document, indexed map[string]bool,
) (conds []string, args []any, orderable bool, paths []string, ok bool) {
	for i, k := range filter.Keys() {
		switch v := filter.Values()[i].(type) {
		case string:
			if k == "_id" {
				orderable = true
			} else if !indexed[k] {
				return nil, nil, false, nil, false
			}
			conds = append(conds, metadata.FleetTypeIs(k, "string"), metadata.FleetValue(k)+` = ?`)
			args = append(args, v)
		case bool:
			if !indexed[k] {
				return nil, nil, false, nil, false
			}
			b := 0
			if v {
				b = 1
			}
			conds = append(conds, metadata.FleetTypeIs(k, "bool"), metadata.FleetValue(k)+` = ?`)
			args = append(args, b)
		case *types.Document:
			if k != "_id" {
				c, a, isRange := fleetNumberRange(k, v)
				if !indexed[k] || !isRange {
					return nil, nil, false, nil, false
				}
				conds, args = append(conds, c...), append(args, a...)
				break
			}
			c, a, isRange := fleetIDRange(v)
			if !isRange {
				return nil, nil, false, nil, false
			}
			conds, args, orderable = append(conds, c...), append(args, a...), true
		default:
			return nil, nil, false, nil, false
		}
		if k != "_id" {
			paths = append(paths, metadata.FleetPrefixes(k)...)
		}
	}
	return conds, args, orderable, paths, true
}

// fleetIndexedBy names the index to use, like MongoDB's `hint`: the one whose keys are the first equality
// field of the filter (in the filter's order) and `_id`. SQLite has no statistics here (no ANALYZE) and
// otherwise guesses, at times the least selective index; the caller orders its filter, most selective first.
func fleetIndexedBy(meta *metadata.Collection, filter *types.Document) string {
	for _, k := range filter.Keys() {
		if k == "_id" {
			continue
		}
		for _, index := range meta.Settings.Indexes {
			keys := index.Key
			if !index.Unique && len(keys) == 2 && keys[0].Field == k && keys[1].Field == "_id" {
				return fmt.Sprintf(` INDEXED BY %q`, meta.TableName+"_"+index.Name)
			}
		}
	}
	return ""
}

// fleetIndexedFields is the fields of the collection's non-unique indexes (their SQL values are indexed).
func fleetIndexedFields(meta *metadata.Collection) map[string]bool {
	fields := map[string]bool{}
	for _, index := range meta.Settings.Indexes {
		if index.Unique {
			continue
		}
		for _, key := range index.Key {
			if _, ok := metadata.FleetIndexColumn(key.Field); ok && key.Field != "_id" {
				fields[key.Field] = true
			}
		}
	}
	return fields
}

// fleetNoArrays holds when no document has an array on any of the paths (one probe of a partial index each).
func fleetNoArrays(ctx context.Context, db *fsql.DB, table string, paths []string) (bool, error) {
	for _, p := range paths {
		q := fmt.Sprintf(`SELECT 1 FROM %q WHERE %s LIMIT 1`, table, metadata.FleetArrayCondition(p))
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			return false, lazyerrors.Error(err)
		}
		found := rows.Next()
		_ = rows.Close()
		if found {
			return false, nil
		}
	}
	return true, nil
}
""",
    REGISTRY: """
// %MARK%:
// fleetSegments is a dotted field's path segments, when each is a plain name (no quoting needed in a path).
func fleetSegments(field string) ([]string, bool) {
	segments := strings.Split(field, ".")
	for _, s := range segments {
		if s == "" {
			return nil, false
		}
		for i, r := range s {
			if r != '_' && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (i == 0 || r < '0' || r > '9') {
				return nil, false
			}
		}
	}
	return segments, true
}

// FleetIndexColumn is the SQL value of a field, which non-unique indexes index.
func FleetIndexColumn(field string) (string, bool) {
	segments, ok := fleetSegments(field)
	if !ok {
		return "", false
	}
	return fmt.Sprintf(`%s->>'$.%s'`, DefaultColumn, strings.Join(segments, ".")), true
}

// FleetValue is FleetIndexColumn of a field known to qualify.
func FleetValue(field string) string {
	column, _ := FleetIndexColumn(field)
	return column
}

// FleetTypeIs is the condition that the field's value has the sjson type t (sjson keeps types in `$s`).
func FleetTypeIs(field, t string) string {
	segments, _ := fleetSegments(field)
	return fmt.Sprintf(`%s->>'$."$s".p.%s.t' = '%s'`, DefaultColumn, strings.Join(segments, `."$s".p.`), t)
}

// FleetPrefixes is a dotted path and its parents ("a.b": "a", "a.b").
func FleetPrefixes(field string) []string {
	segments := strings.Split(field, ".")
	prefixes := make([]string, len(segments))
	for i := range segments {
		prefixes[i] = strings.Join(segments[:i+1], ".")
	}
	return prefixes
}

// FleetArrayCondition holds for documents with an array at the path.
func FleetArrayCondition(path string) string {
	return fmt.Sprintf(`json_type(%s, '$.%s') = 'array'`, DefaultColumn, path)
}

// fleetArraySentinels adds, for each path of a non-unique index's fields, a partial index of the documents
// holding an array there: the exact pushdown checks with one probe that there are none.
func fleetArraySentinels(ctx context.Context, db *fsql.DB, table string, index IndexInfo) error {
	if index.Unique {
		return nil
	}
	for _, key := range index.Key {
		if _, ok := FleetIndexColumn(key.Field); !ok || key.Field == "_id" {
			continue
		}
		for _, p := range FleetPrefixes(key.Field) {
			q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (%s) WHERE %s`,
				fmt.Sprintf("%s_fleet_arrays_%x", table, p), table, FleetValue("_id"), FleetArrayCondition(p))
			if _, err := db.ExecContext(ctx, q); err != nil {
				return err
			}
		}
	}
	return nil
}
""",
}


def patched(file: str, source: str) -> str:
    """FerretDB's `file` with the patch applied; ValueError if its code no longer matches the patch."""
    for old, new, count in REPLACEMENTS.get(file, []):
        if source.count(old) != count:
            raise ValueError(f"FerretDB's {file} no longer matches the patch in {__name__}; update the patch")
        source = source.replace(old, new.replace("%MARK%", MARK))
    return source + APPENDED.get(file, "").replace("%MARK%", MARK)


def added(patch_dir: Path) -> dict[str, Path]:
    """The Go files the patch adds to FerretDB's module: their path in the module, and the file here."""
    return {file.relative_to(patch_dir).as_posix(): file for file in sorted(patch_dir.rglob("*.go"))}


def apply(module: Path, patch_dir: Path) -> None:
    """Patch a writable copy of FerretDB's module in place, adding the Go files under `patch_dir`."""
    for file in sorted(REPLACEMENTS.keys() | APPENDED.keys()):
        target = module / file
        target.write_text(patched(file, target.read_text()))
    for name, source in added(patch_dir).items():
        target = module / name
        if target.exists():
            raise ValueError(f"FerretDB now has a {name}, which {__name__} adds; update the patch")
        target.write_bytes(source.read_bytes())
