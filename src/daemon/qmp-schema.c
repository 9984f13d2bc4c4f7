/* SPDX-License-Identifier: MIT */
/*
 * The QMP schema (see qmp.h): checking a command's arguments against its
 * table, and describing the tables in QEMU's introspection format
 * (query-qmp-schema).
 *
 * DESIGN:
 *  - Checking follows QEMU's input visitor, so messages and their order
 *    are QEMU's: the declared members in declaration order (missing,
 *    wrong type, enum value), nested objects and array elements by path
 *    ("channels[0].addr.host"), a union's variant members after its base,
 *    and only then members nobody declared. An enum's message names the
 *    bare member, as QEMU's does.
 *  - Introspection (QEMU's SchemaInfo): builtins by QEMU's names (every
 *    integer type is "int"), every other type numbered in the order it
 *    is first met ("0" is always the empty object: no arguments, no
 *    reply), arrays "[N]". A type met twice (the same table) is described
 *    once. Names are only references: clients look types up by them.
 *
 * Thread: loop thread only (no state).
 */
#include "qmp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *type_name(ferry_qmp_type t)
{
	switch (t) {
	case FERRY_QMP_STR: return "string";
	case FERRY_QMP_BOOL: return "boolean";
	case FERRY_QMP_INT: return "integer";
	case FERRY_QMP_UINT64: return "uint64";
	case FERRY_QMP_UINT32: return "uint32_t";
	case FERRY_QMP_SIZE: return "size";
	case FERRY_QMP_ARRAY: return "array";
	case FERRY_QMP_OBJECT: return "object";
	case FERRY_QMP_ENUM: return "string";
	case FERRY_QMP_ANY: return "any";
	case FERRY_QMP_NUMBER: return "number";
	}
	return "?";
}

/* ------------------------------------------------------------------ */
/* Checking.                                                           */

static int check_object(json_t *obj, const ferry_qmp_arg *t, const char *prefix, char *err,
			size_t elen);

static bool enum_has(const char *const *values, const char *v)
{
	for (; *values; values++)
		if (!strcmp(*values, v))
			return true;
	return false;
}

/* One value v of type a, named path in messages ("capabilities[0]"), key its bare name. */
static int check_value(json_t *v, const ferry_qmp_arg *a, const char *path, const char *key,
		       char *err, size_t elen)
{
	bool ok = true, range = false;
	switch (a->type) {
	case FERRY_QMP_STR: ok = json_is_string(v); break;
	case FERRY_QMP_ENUM: ok = json_is_string(v); break;
	case FERRY_QMP_BOOL: ok = json_is_boolean(v); break;
	case FERRY_QMP_INT: ok = json_is_integer(v); break;
	case FERRY_QMP_NUMBER: ok = json_is_number(v); break;
	case FERRY_QMP_ANY: break;
	case FERRY_QMP_UINT64:
	case FERRY_QMP_SIZE:
		range = true;
		ok = json_is_integer(v) && json_integer_value(v) >= 0;
		break;
	case FERRY_QMP_UINT32:
		range = true;
		ok = json_is_integer(v) && json_integer_value(v) >= 0 &&
		     json_integer_value(v) <= (json_int_t)UINT32_MAX;
		break;
	case FERRY_QMP_ARRAY: ok = json_is_array(v); break;
	case FERRY_QMP_OBJECT: ok = json_is_object(v); break;
	}
	if (!ok) {
		/* QEMU's visitor words unsigned and size mismatches as "expects". */
		if (range)
			snprintf(err, elen, "Parameter '%s' expects %s", path, type_name(a->type));
		else
			snprintf(err, elen, "Invalid parameter type for '%s', expected: %s", path,
				 type_name(a->type));
		return -EINVAL;
	}
	if (a->type == FERRY_QMP_ENUM && !enum_has(a->values, json_string_value(v))) {
		snprintf(err, elen, "Parameter '%s' does not accept value '%s'", key,
			 json_string_value(v));
		return -EINVAL;
	}
	char sub[256];
	if (a->type == FERRY_QMP_OBJECT && a->members) {
		snprintf(sub, sizeof(sub), "%s.", path);
		return check_object(v, a, sub, err, elen);
	}
	if (a->type == FERRY_QMP_ARRAY && a->elem) {
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e) {
			snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
			if (check_value(e, a->elem, sub, sub, err, elen))
				return -EINVAL;
		}
	}
	return 0;
}

/* The variant of union t that obj's tag selects, or NULL. */
static const ferry_qmp_arg *variant_of(json_t *obj, const ferry_qmp_arg *t)
{
	const char *v = t->tag ? json_string_value(json_object_get(obj, t->tag)) : NULL;
	for (const ferry_qmp_variant *c = t->variants; v && c && c->value; c++)
		if (!strcmp(c->value, v))
			return c->type;
	return NULL;
}

/*
 * The declared members of t, then its variant's (recursively). Sets
 * *open when a union's tag has no variant here: what else obj holds is
 * then the handler's to judge.
 */
static int check_members(json_t *obj, const ferry_qmp_arg *t, const char *prefix, bool *open,
			 char *err, size_t elen)
{
	char path[256];
	for (const ferry_qmp_arg *a = t->members; a->name; a++) {
		json_t *v = json_object_get(obj, a->name);
		snprintf(path, sizeof(path), "%s%s", prefix, a->name);
		if (!v && a->optional)
			continue;
		if (!v) {
			snprintf(err, elen, "Parameter '%s' is missing", path);
			return -EINVAL;
		}
		if (check_value(v, a, path, a->name, err, elen))
			return -EINVAL;
	}
	if (!t->tag)
		return 0;
	const ferry_qmp_arg *var = variant_of(obj, t);
	if (!var) {
		*open = true;
		return 0;
	}
	return check_members(obj, var, prefix, open, err, elen);
}

/* key is a member of t or of the variant obj selects. */
static bool declared(json_t *obj, const ferry_qmp_arg *t, const char *key)
{
	for (const ferry_qmp_arg *a = t->members; a->name; a++)
		if (!strcmp(a->name, key))
			return true;
	const ferry_qmp_arg *var = t->tag ? variant_of(obj, t) : NULL;
	return var && declared(obj, var, key);
}

static int check_object(json_t *obj, const ferry_qmp_arg *t, const char *prefix, char *err,
			size_t elen)
{
	bool open = false;
	if (check_members(obj, t, prefix, &open, err, elen))
		return -EINVAL;
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v) {
		if (!open && !declared(obj, t, key)) {
			snprintf(err, elen, "Parameter '%s%s' is unexpected", prefix, key);
			return -EINVAL;
		}
	}
	return 0;
}

int ferry_qmp_check_args(json_t *obj, const ferry_qmp_arg *spec, const char *prefix, char *err,
			 size_t elen)
{
	static const ferry_qmp_arg none[] = { { NULL } };
	ferry_qmp_arg t = { .type = FERRY_QMP_OBJECT, .members = spec ? spec : none };
	return check_object(obj, &t, prefix, err, elen);
}

int ferry_qmp_check_type(json_t *obj, const ferry_qmp_arg *type, const char *prefix, char *err,
			 size_t elen)
{
	return check_object(obj, type, prefix, err, elen);
}

/* ------------------------------------------------------------------ */
/* Introspection.                                                      */

#define SCHEMA_MAX_TYPES 256

typedef struct schema {
	json_t *out;                         /* the SchemaInfo list */
	const void *seen[SCHEMA_MAX_TYPES];  /* tables already described ... */
	char names[SCHEMA_MAX_TYPES][16];    /* ... and their names */
	unsigned n;
	unsigned next;                       /* the next number */
} schema;

static const char *describe(schema *s, const ferry_qmp_arg *t);

static const char *builtin(ferry_qmp_type t)
{
	switch (t) {
	case FERRY_QMP_STR: return "str";
	case FERRY_QMP_BOOL: return "bool";
	case FERRY_QMP_NUMBER: return "number";
	case FERRY_QMP_ANY: return "any";
	case FERRY_QMP_INT:
	case FERRY_QMP_UINT64:
	case FERRY_QMP_UINT32:
	case FERRY_QMP_SIZE: return "int";
	default: return NULL;
	}
}

/* A name for key (a table), or NULL if met before with *name set to it. */
static char *type_slot(schema *s, const void *key, const char **name)
{
	for (unsigned i = 0; i < s->n; i++)
		if (s->seen[i] == key) {
			*name = s->names[i];
			return NULL;
		}
	if (s->n == SCHEMA_MAX_TYPES) {
		*name = "any"; /* cannot happen with Ferry's tables; stays valid */
		return NULL;
	}
	s->seen[s->n] = key;
	snprintf(s->names[s->n], sizeof(s->names[0]), "%u", s->next++);
	*name = s->names[s->n];
	return s->names[s->n++];
}

static json_t *members_json(schema *s, const ferry_qmp_arg *members)
{
	json_t *a = json_array();
	for (const ferry_qmp_arg *m = members; m && m->name; m++) {
		json_t *o = json_pack("{s:s,s:s}", "name", m->name, "type", describe(s, m));
		if (m->optional)
			json_object_set_new(o, "default", json_null());
		json_array_append_new(a, o);
	}
	return a;
}

static const ferry_qmp_arg no_members[] = { { NULL } };

static const char *describe_object(schema *s, const ferry_qmp_arg *t)
{
	const char *name;
	/* Every empty object is "0", as in QEMU. */
	const void *key = !t->members->name && !t->tag ? no_members : t->members;
	char *slot = type_slot(s, key, &name);
	if (!slot)
		return name;
	json_t *o = json_pack("{s:s,s:s,s:o}", "name", slot, "meta-type", "object", "members",
			      members_json(s, t->members));
	if (t->tag) {
		json_t *vs = json_array();
		for (const ferry_qmp_variant *v = t->variants; v->value; v++)
			json_array_append_new(vs, json_pack("{s:s,s:s}", "case", v->value, "type",
							    describe(s, v->type)));
		json_object_set_new(o, "tag", json_string(t->tag));
		json_object_set_new(o, "variants", vs);
	}
	json_array_append_new(s->out, o);
	return slot;
}

static const char *describe_enum(schema *s, const ferry_qmp_arg *t)
{
	const char *name;
	char *slot = type_slot(s, t->values, &name);
	if (!slot)
		return name;
	json_t *vals = json_array(), *mem = json_array();
	for (const char *const *v = t->values; *v; v++) {
		json_array_append_new(vals, json_string(*v));
		json_array_append_new(mem, json_pack("{s:s}", "name", *v));
	}
	json_array_append_new(s->out, json_pack("{s:s,s:s,s:o,s:o}", "name", slot, "meta-type",
						"enum", "values", vals, "members", mem));
	return slot;
}

static const char *describe_array(schema *s, const ferry_qmp_arg *t)
{
	const char *elem = t->elem ? describe(s, t->elem) : "any";
	char buf[24];
	snprintf(buf, sizeof(buf), "[%s]", elem);
	const char *name;
	/* Arrays are keyed by their element's name: "[str]" once. */
	for (unsigned i = 0; i < s->n; i++)
		if (!strcmp(s->names[i], buf))
			return s->names[i];
	if (s->n == SCHEMA_MAX_TYPES)
		return "any";
	name = strcpy(s->names[s->n], buf);
	s->seen[s->n++] = NULL;
	json_array_append_new(s->out, json_pack("{s:s,s:s,s:s}", "name", name, "meta-type", "array",
						"element-type", elem));
	return name;
}

static const char *describe(schema *s, const ferry_qmp_arg *t)
{
	const char *b = builtin(t->type);
	if (b)
		return b;
	switch (t->type) {
	case FERRY_QMP_ENUM: return describe_enum(s, t);
	case FERRY_QMP_ARRAY: return describe_array(s, t);
	default: return t->members ? describe_object(s, t) : "any";
	}
}

/* The object type of a table of members (args, event data): "0" when NULL or empty. */
static const char *describe_members(schema *s, const ferry_qmp_arg *members)
{
	ferry_qmp_arg t = { .type = FERRY_QMP_OBJECT, .members = members ? members : no_members };
	return describe_object(s, &t);
}

static void add_builtins(schema *s)
{
	static const char *const b[][2] = {
		{ "str", "string" }, { "any", "value" },     { "bool", "boolean" },
		{ "int", "int" },    { "null", "null" },     { "number", "number" },
	};
	for (size_t i = 0; i < sizeof(b) / sizeof(b[0]); i++)
		json_array_append_new(s->out, json_pack("{s:s,s:s,s:s}", "name", b[i][0], "meta-type",
							"builtin", "json-type", b[i][1]));
}

static void add_command(schema *s, const ferry_qmp_command *c)
{
	const char *arg = c->args_union ? describe(s, c->args_union) : describe_members(s, c->args);
	const char *ret = c->ret ? describe(s, c->ret) : describe_members(s, NULL);
	json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "name", c->name, "meta-type", "command", "arg-type",
			      arg, "ret-type", ret);
	if (c->flags & FERRY_QMP_ALLOW_OOB)
		json_object_set_new(o, "allow-oob", json_true());
	json_array_append_new(s->out, o);
}

json_t *ferry_qmp_schema(const ferry_qmp_command *const *tables, const ferry_qmp_event *events)
{
	schema *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->out = json_array();
	describe_members(s, NULL); /* "0" */
	for (; *tables; tables++)
		for (const ferry_qmp_command *c = *tables; c->name; c++)
			add_command(s, c);
	for (const ferry_qmp_event *e = events; e && e->name; e++)
		json_array_append_new(s->out, json_pack("{s:s,s:s,s:s}", "name", e->name, "meta-type",
							"event", "arg-type",
							describe_members(s, e->data)));
	add_builtins(s);
	json_t *out = s->out;
	free(s);
	return out;
}
