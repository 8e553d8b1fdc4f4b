"""A build-time patch to FerretDB 1.24's SQLite backend: push `_id` lookups down to SQLite more often.

FerretDB 1.24 turns a filter into a SQL `WHERE` only when the filter is exactly `{_id: <string or ObjectId>}`.
Any other filter reads the whole table and filters in Go, so a conditional write such as
`{_id: device, version: 7}` (optimistic concurrency, which MongoDB answers from its `_id` index) or a batched
lookup `{_id: {$in: [...]}}` costs a scan of the collection: 60 writes/s at 10k documents. The patch pushes
`_id` equality down whatever else the filter holds, `_id: {$in: [strings or ObjectIds]}` as `IN (...)`, and
string ranges of `_id` (`$gt`/`$gte`/`$lt`/`$lte`) on an index of `_id`'s text (a bounded sweep by `_id`).
It only narrows the rows SQLite returns: every FerretDB handler filters the returned documents again with
the full filter (the same contract FerretDB's PostgreSQL backend relies on for its wider pushdown), and limit
pushdown applies only to empty filters.

At build time the module is copied out of Go's module cache, this file is patched in the copy, and the build
uses it through a `replace` (`build.ferretdb_binary`); no FerretDB source is kept in this repository. If
FerretDB's code no longer matches, the build fails loudly.
"""

from __future__ import annotations

FILE = "internal/backends/sqlite/collection.go"

MARK = "tuya-fleet patch (infra/devstack/src/fleet_devstack/ferretdb_patch.py)"

# Query's and Explain's where-clause logic (Explain reports the pushdown and SQLite's plan, so tests can
# see it); each block must occur exactly once.
REPLACEMENTS = [
    (
        """\
	if params.Filter.Len() == 1 {
		v, _ := params.Filter.Get("_id")
		switch v.(type) {
		case string, types.ObjectID:
			whereClause = fmt.Sprintf(` WHERE %s = ?`, metadata.IDColumn)
			args = []any{string(must.NotFail(sjson.MarshalSingleValue(v)))}
		}
	}

	q += whereClause
""",
        f"""\
	// {MARK}
	whereClause, args = fleetWhere(params.Filter)

	q += whereClause
""",
    ),
    (
        """\
	if params.Filter.Len() == 1 {
		v, _ := params.Filter.Get("_id")
		switch v.(type) {
		case string, types.ObjectID:
			filterPushdown = true
			whereClause = fmt.Sprintf(` WHERE %s = ?`, metadata.IDColumn)
			args = []any{string(must.NotFail(sjson.MarshalSingleValue(v)))}
		}
	}
""",
        f"""\
	// {MARK}
	whereClause, args = fleetWhere(params.Filter)
	filterPushdown = whereClause != ""
""",
    ),
]

APPENDED = f"""
// {MARK}:
// fleetWhere is the SQL condition for the filter's `_id` equality or `$in`, whatever else the filter holds;
// empty when there is none to push down. Handlers filter every returned row again with the whole filter.
func fleetWhere(filter *types.Document) (string, []any) {{
	id, ok := fleetTopLevelID(filter)
	if !ok {{
		return "", nil
	}}
	switch v := id.(type) {{
	case string, types.ObjectID:
		arg := string(must.NotFail(sjson.MarshalSingleValue(v)))
		return fmt.Sprintf(` WHERE %s = ?`, metadata.IDColumn), []any{{arg}}
	case *types.Document:
		if in, ok := fleetIDIn(v); ok {{
			marks := strings.TrimSuffix(strings.Repeat("?, ", len(in)), ", ")
			return fmt.Sprintf(` WHERE %s IN (%s)`, metadata.IDColumn, marks), in
		}}
		if where, args, ok := fleetIDRange(v); ok {{
			return where, args
		}}
	}}
	return "", nil
}}

// fleetIDTextColumn is `_id` as an SQL value (a string `_id` as TEXT, compared byte by byte as MongoDB
// compares strings); the front indexes this expression (infra/ferretdb/idindex.go).
const fleetIDTextColumn = `_ferretdb_sjson->>'$._id'`

// fleetIDIsString holds for documents whose `_id` is a string (sjson keeps each field's type in `$s`; an
// ObjectId is stored as a hex string too, so the value alone does not say).
const fleetIDIsString = `_ferretdb_sjson->>'$."$s".p._id.t' = 'string'`

// fleetIDRange is the SQL condition for `{{$gt|$gte|$lt|$lte: <string>, ...}}` on `_id`: exactly the documents
// MongoDB matches (a string bound only matches strings, compared bytewise), answered from the index.
func fleetIDRange(cond *types.Document) (string, []any, bool) {{
	if cond.Len() == 0 {{
		return "", nil, false
	}}
	ops := map[string]string{{"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}}
	where := ` WHERE ` + fleetIDIsString
	args := make([]any, 0, cond.Len())
	for i, k := range cond.Keys() {{
		op, known := ops[k]
		bound, isString := cond.Values()[i].(string)
		if !known || !isString {{
			return "", nil, false
		}}
		where += fmt.Sprintf(` AND %s %s ?`, fleetIDTextColumn, op)
		args = append(args, bound)
	}}
	return where, args, true
}}

// fleetTopLevelID is the filter's `_id` condition, if it has exactly one.
func fleetTopLevelID(filter *types.Document) (any, bool) {{
	at := -1
	for i, k := range filter.Keys() {{
		if k == "_id" {{
			if at >= 0 {{
				return nil, false
			}}
			at = i
		}}
	}}
	if at < 0 {{
		return nil, false
	}}
	return filter.Values()[at], true
}}

// fleetIDIn is the SQL arguments of `{{$in: [...]}}` when every element is a string or an ObjectId.
func fleetIDIn(cond *types.Document) ([]any, bool) {{
	if cond.Len() != 1 || cond.Keys()[0] != "$in" {{
		return nil, false
	}}
	in, ok := cond.Values()[0].(*types.Array)
	if !ok || in.Len() == 0 || in.Len() > 1000 {{
		return nil, false
	}}
	args := make([]any, 0, in.Len())
	for i := 0; i < in.Len(); i++ {{
		v := must.NotFail(in.Get(i))
		switch v.(type) {{
		case string, types.ObjectID:
			args = append(args, string(must.NotFail(sjson.MarshalSingleValue(v))))
		default:
			return nil, false
		}}
	}}
	return args, true
}}
"""


def patched(source: str) -> str:
    """FerretDB's collection.go with the patch applied; ValueError if the code no longer matches."""
    for old, new in REPLACEMENTS:
        if source.count(old) != 1:
            raise ValueError(f"FerretDB's {FILE} no longer matches the patch in {__name__}; update the patch")
        source = source.replace(old, new)
    return source + APPENDED
