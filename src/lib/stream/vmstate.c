/* SPDX-License-Identifier: MIT */
/*
 * Device state: encoding, decoding and validation of ferry_vmsd tables (see
 * ferry/vmstate.h; the byte layout is in docs/wire-format.md, "Device
 * state").
 *
 * DESIGN
 *
 * Wire format. A body is a sequence of tagged entries ended by tag 0x00:
 * fields (0x01: type, name, be32 size, big-endian data), then subsections
 * (0x05: name, be32 version, be32 body length, body). Every field carries
 * its name, type and size, so the decoder checks each one against the local
 * table and reports exactly what differs instead of misreading bytes.
 *
 * Encoding goes through a writer that counts every byte but stores only
 * what fits below cap, so one code path both sizes (cap 0) and writes. A
 * subsection's body length is written as a placeholder and patched once the
 * body is encoded (when the placeholder lies below cap). pre_save and
 * needed run on every call, the sizing one included; callers that size and
 * then write (source.c) compare the two lengths.
 *
 * Decoding treats the buffer as hostile. Every length is checked against
 * the bytes left before it is used (comparisons are written as
 * `n > len - pos`, which cannot overflow), nothing is read outside
 * [buf, buf + len), and a field's data is stored only after its name, type
 * and size matched the local table, so a store writes exactly the local
 * member (whose size validation tied to its type). Subsection nesting is
 * bounded by VMSD_MAX_DEPTH, both in validation (which also catches a table
 * that contains itself) and while decoding.
 *
 * Decoding runs twice over the buffer: a checking pass that stores nothing,
 * then, only if the whole stream is valid, an applying pass that stores the
 * fields and calls post_load (each subsection's after its body, the top
 * level's last). A rejected stream therefore leaves the device struct
 * untouched. Only post_load hooks can fail during the second pass.
 *
 * Error messages name the vmsd path ("cpu: ...", "cpu/fpu: ...") followed
 * by what is wrong; names read from the stream are printed with
 * non-printable bytes replaced by '?'. A version error names the state it
 * concerns ("device state 'fpu' version 3 is newer than supported 2") and is
 * prefixed with its parent's path only.
 *
 * Tables are validated at registration (ferry__vmsd_validate) and again by
 * ferry_vmsd_encode/decode, which are public and may get any table. A field
 * table ends at the first entry of type FERRY_FT_END; a NULL `fields` is an
 * empty table.
 *
 * Thread: any; no shared state. Nothing here prints.
 */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

/* Deepest subsection nesting (the top-level vmsd is depth 0). */
#define VMSD_MAX_DEPTH 8

#define TAG_END 0x00
#define TAG_FIELD 0x01
#define TAG_SUB 0x05

static const ferry_field empty_fields[] = { FERRY_FIELD_END };

static const ferry_field *fields_of(const ferry_vmsd *v)
{
	return v->fields ? v->fields : empty_fields;
}

static bool is_end(const ferry_field *f)
{
	return f->type == FERRY_FT_END;
}

static const char *type_name(unsigned t)
{
	static const char *const names[] = {
		[FERRY_FT_U8] = "u8",       [FERRY_FT_U16] = "u16",
		[FERRY_FT_U32] = "u32",     [FERRY_FT_U64] = "u64",
		[FERRY_FT_I32] = "i32",     [FERRY_FT_I64] = "i64",
		[FERRY_FT_BOOL] = "bool",   [FERRY_FT_BYTES] = "bytes",
		[FERRY_FT_U64_ARRAY] = "u64_array",
	};
	return t < sizeof(names) / sizeof(names[0]) ? names[t] : NULL;
}

/* Bytes of a field's data on the wire (BOOL is one byte whatever sizeof(bool)). */
static size_t wire_size(const ferry_field *f)
{
	return f->type == FERRY_FT_BOOL ? 1 : f->size;
}

/* ------------------------------------------------------------------------ */
/* Validation                                                                */

static bool name_ok(const char *name)
{
	if (!name)
		return false;
	size_t n = strnlen(name, FERRY_NAME_MAX + 1);
	return n >= 1 && n <= FERRY_NAME_MAX;
}

static bool field_size_ok(const ferry_field *f)
{
	switch (f->type) {
	case FERRY_FT_U8:
		return f->size == 1;
	case FERRY_FT_U16:
		return f->size == 2;
	case FERRY_FT_U32:
	case FERRY_FT_I32:
		return f->size == 4;
	case FERRY_FT_U64:
	case FERRY_FT_I64:
		return f->size == 8;
	case FERRY_FT_BOOL:
		return f->size == sizeof(bool);
	case FERRY_FT_BYTES:
		return f->size > 0;
	case FERRY_FT_U64_ARRAY:
		return f->size > 0 && f->size % 8 == 0;
	default:
		return false; /* FERRY_FT_END never gets here; unknown type */
	}
}

static int validate(const ferry_vmsd *v, unsigned depth)
{
	if (!v || !name_ok(v->name) || v->version < v->min_version)
		return -EINVAL;
	const ferry_field *fields = fields_of(v);
	for (const ferry_field *f = fields; !is_end(f); f++) {
		if (!name_ok(f->name) || !field_size_ok(f))
			return -EINVAL;
		/* The size travels as a be32. */
		if (f->size > UINT32_MAX || f->offset > SIZE_MAX - f->size)
			return -EINVAL;
		/* A field from a future version could never be saved. */
		if (f->since_version > v->version)
			return -EINVAL;
		for (const ferry_field *g = fields; g < f; g++)
			if (!strcmp(g->name, f->name))
				return -EINVAL;
	}
	if (!v->subsections)
		return 0;
	for (const ferry_vmsd_sub *s = v->subsections; s->vmsd; s++) {
		if (depth + 1 > VMSD_MAX_DEPTH)
			return -EINVAL;
		int r = validate(s->vmsd, depth + 1);
		if (r < 0)
			return r;
		for (const ferry_vmsd_sub *t = v->subsections; t < s; t++)
			if (!strcmp(t->vmsd->name, s->vmsd->name))
				return -EINVAL;
	}
	return 0;
}

int ferry__vmsd_validate(const ferry_vmsd *vmsd)
{
	return validate(vmsd, 0);
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                  */

struct writer {
	uint8_t *buf;
	size_t cap;
	size_t pos; /* bytes produced so far, may exceed cap */
};

static void put(struct writer *w, const void *p, size_t n)
{
	if (n && w->pos <= w->cap && n <= w->cap - w->pos)
		memcpy(w->buf + w->pos, p, n);
	w->pos += n;
}

static void put_u8(struct writer *w, uint8_t x)
{
	put(w, &x, 1);
}

static void be16_to(uint8_t *b, uint16_t x)
{
	b[0] = (uint8_t)(x >> 8);
	b[1] = (uint8_t)x;
}

static void be32_to(uint8_t *b, uint32_t x)
{
	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(x >> (24 - 8 * i));
}

static void be64_to(uint8_t *b, uint64_t x)
{
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(x >> (56 - 8 * i));
}

static uint16_t be16_from(const uint8_t *b)
{
	return (uint16_t)((unsigned)b[0] << 8 | b[1]);
}

static uint32_t be32_from(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static uint64_t be64_from(const uint8_t *b)
{
	return (uint64_t)be32_from(b) << 32 | be32_from(b + 4);
}

static void put_be32(struct writer *w, uint32_t x)
{
	uint8_t b[4];
	be32_to(b, x);
	put(w, b, 4);
}

static void put_be64(struct writer *w, uint64_t x)
{
	uint8_t b[8];
	be64_to(b, x);
	put(w, b, 8);
}

static void put_name(struct writer *w, const char *name)
{
	size_t n = strlen(name); /* 1..255, validated */
	put_u8(w, (uint8_t)n);
	put(w, name, n);
}

static void put_field_data(struct writer *w, const ferry_field *f, const void *opaque)
{
	const uint8_t *src = (const uint8_t *)opaque + f->offset;
	switch (f->type) {
	case FERRY_FT_U8:
		put(w, src, 1);
		break;
	case FERRY_FT_U16: {
		uint16_t x;
		uint8_t b[2];
		memcpy(&x, src, 2);
		be16_to(b, x);
		put(w, b, 2);
		break;
	}
	case FERRY_FT_U32:
	case FERRY_FT_I32: {
		uint32_t x;
		memcpy(&x, src, 4);
		put_be32(w, x);
		break;
	}
	case FERRY_FT_U64:
	case FERRY_FT_I64: {
		uint64_t x;
		memcpy(&x, src, 8);
		put_be64(w, x);
		break;
	}
	case FERRY_FT_BOOL: {
		/* Read as bytes: a bool holding garbage is still sent as 0/1. */
		uint8_t b = 0;
		for (size_t i = 0; i < f->size; i++)
			b |= src[i];
		put_u8(w, b != 0);
		break;
	}
	case FERRY_FT_BYTES:
		put(w, src, f->size);
		break;
	case FERRY_FT_U64_ARRAY:
		for (size_t i = 0; i < f->size / 8; i++) {
			uint64_t x;
			memcpy(&x, src + 8 * i, 8);
			put_be64(w, x);
		}
		break;
	default:
		break; /* excluded by validation */
	}
}

static int encode_body(const ferry_vmsd *v, void *opaque, struct writer *w)
{
	if (v->pre_save) {
		int r = v->pre_save(opaque);
		if (r < 0)
			return r;
	}
	for (const ferry_field *f = fields_of(v); !is_end(f); f++) {
		put_u8(w, TAG_FIELD);
		put_u8(w, (uint8_t)f->type);
		put_name(w, f->name);
		put_be32(w, (uint32_t)wire_size(f));
		put_field_data(w, f, opaque);
	}
	for (const ferry_vmsd_sub *s = v->subsections; s && s->vmsd; s++) {
		if (s->needed && !s->needed(opaque))
			continue;
		put_u8(w, TAG_SUB);
		put_name(w, s->vmsd->name);
		put_be32(w, s->vmsd->version);
		size_t lenpos = w->pos;
		put_be32(w, 0); /* body length, patched below */
		size_t start = w->pos;
		int r = encode_body(s->vmsd, opaque, w);
		if (r < 0)
			return r;
		size_t body = w->pos - start;
		if (body > UINT32_MAX)
			return -E2BIG;
		if (lenpos <= w->cap && w->cap - lenpos >= 4)
			be32_to(w->buf + lenpos, (uint32_t)body);
	}
	put_u8(w, TAG_END);
	return 0;
}

int64_t ferry_vmsd_encode(const ferry_vmsd *vmsd, void *opaque, void *buf, size_t cap)
{
	if (!vmsd || !opaque || (!buf && cap))
		return -EINVAL;
	int r = validate(vmsd, 0);
	if (r < 0)
		return r;
	struct writer w = { buf, cap, 0 };
	r = encode_body(vmsd, opaque, &w);
	if (r < 0)
		return r;
	return (int64_t)w.pos;
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                  */

struct dctx {
	char *err;
	size_t err_len;
	void *opaque;
	bool apply; /* second pass: store fields and call post_load */
	/* Names of the vmsds being decoded, outermost first. */
	const char *path[VMSD_MAX_DEPTH + 1];
};

static void err_append(struct dctx *c, size_t *off, const char *fmt, va_list ap)
{
	if (*off >= c->err_len - 1)
		return;
	int n = vsnprintf(c->err + *off, c->err_len - *off, fmt, ap);
	if (n < 0)
		return;
	*off += (size_t)n;
	if (*off > c->err_len - 1)
		*off = c->err_len - 1;
}

static void err_appendf(struct dctx *c, size_t *off, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void err_appendf(struct dctx *c, size_t *off, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	err_append(c, off, fmt, ap);
	va_end(ap);
}

/*
 * Records the error message, prefixed with the first npath names of the
 * path ("cpu/fpu: "), and returns code.
 */
static int fail(struct dctx *c, int code, unsigned npath, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(struct dctx *c, int code, unsigned npath, const char *fmt, ...)
{
	if (!c->err || !c->err_len)
		return code;
	size_t off = 0;
	c->err[0] = '\0';
	for (unsigned i = 0; i < npath; i++)
		err_appendf(c, &off, "%s%s", i ? "/" : "", c->path[i]);
	if (npath)
		err_appendf(c, &off, ": ");
	va_list ap;
	va_start(ap, fmt);
	err_append(c, &off, fmt, ap);
	va_end(ap);
	return code;
}

/* A name from the stream, printable and NUL-terminated. */
static void show_name(char out[FERRY_NAME_MAX + 1], const uint8_t *name, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = name[i] >= 0x20 && name[i] < 0x7f ? (char)name[i] : '?';
	out[n] = '\0';
}

static bool name_eq(const char *local, const uint8_t *name, size_t n)
{
	return strnlen(local, n + 1) == n && !memcmp(local, name, n);
}

/* The first field at or after f that a version-ver stream carries. */
static const ferry_field *expected_from(const ferry_field *f, uint32_t ver)
{
	while (!is_end(f) && f->since_version > ver)
		f++;
	return f;
}

static void store_field(void *opaque, const ferry_field *f, const uint8_t *d)
{
	uint8_t *dst = (uint8_t *)opaque + f->offset;
	switch (f->type) {
	case FERRY_FT_U8:
		*dst = d[0];
		break;
	case FERRY_FT_U16: {
		uint16_t x = be16_from(d);
		memcpy(dst, &x, 2);
		break;
	}
	case FERRY_FT_U32:
	case FERRY_FT_I32: {
		uint32_t x = be32_from(d);
		memcpy(dst, &x, 4);
		break;
	}
	case FERRY_FT_U64:
	case FERRY_FT_I64: {
		uint64_t x = be64_from(d);
		memcpy(dst, &x, 8);
		break;
	}
	case FERRY_FT_BOOL: {
		bool b = d[0] != 0; /* 0/1 checked by the caller */
		memcpy(dst, &b, sizeof(b));
		break;
	}
	case FERRY_FT_BYTES:
		memcpy(dst, d, f->size);
		break;
	case FERRY_FT_U64_ARRAY:
		for (size_t i = 0; i < f->size / 8; i++) {
			uint64_t x = be64_from(d + 8 * i);
			memcpy(dst + 8 * i, &x, 8);
		}
		break;
	default:
		break; /* excluded by validation */
	}
}

/* Version of state v (named in the message) against what v can load. */
static int check_version(struct dctx *c, unsigned npath, const ferry_vmsd *v, uint32_t ver)
{
	if (ver > v->version)
		return fail(c, FERRY_EVERSION, npath,
			    "device state '%s' version %" PRIu32 " is newer than supported %" PRIu32,
			    v->name, ver, v->version);
	if (ver < v->min_version)
		return fail(c, FERRY_EVERSION, npath,
			    "device state '%s' version %" PRIu32 " is older than minimum %" PRIu32,
			    v->name, ver, v->min_version);
	return 0;
}

/* A field entry's header, as read from the stream (after its tag). */
struct field_hdr {
	uint8_t type;
	uint8_t nl;                  /* name length, not 0 */
	const uint8_t *name;         /* in the buffer; not terminated */
	uint32_t size;               /* of the data that follows */
	char nm[FERRY_NAME_MAX + 1]; /* the name, printable, for messages */
};

/* Reads the field header at *ppos into h and moves *ppos past it. */
static int field_header(struct dctx *c, unsigned pd, const uint8_t *buf, size_t len,
			size_t *ppos, struct field_hdr *h)
{
	size_t pos = *ppos;
	if (len - pos < 2)
		return fail(c, FERRY_EBADSTREAM, pd, "truncated field header");
	h->type = buf[pos];
	h->nl = buf[pos + 1];
	pos += 2;
	if (!h->nl)
		return fail(c, FERRY_EBADSTREAM, pd, "field with an empty name");
	if (len - pos < h->nl)
		return fail(c, FERRY_EBADSTREAM, pd, "truncated field header");
	h->name = buf + pos;
	pos += h->nl;
	show_name(h->nm, h->name, h->nl);
	if (len - pos < 4)
		return fail(c, FERRY_EBADSTREAM, pd, "truncated in field '%s'", h->nm);
	h->size = be32_from(buf + pos);
	*ppos = pos + 4;
	return 0;
}

/*
 * The local field h names into *pf. It must be next, the field a
 * version-ver stream carries at this point; otherwise the message says
 * how the stream differs from v.
 */
static int field_match(struct dctx *c, unsigned pd, const ferry_vmsd *v, uint32_t ver,
		       const struct field_hdr *h, const ferry_field *next,
		       const ferry_field **pf)
{
	if (!is_end(next) && name_eq(next->name, h->name, h->nl)) {
		*pf = next;
		return 0;
	}
	const ferry_field *f;
	for (f = fields_of(v); !is_end(f); f++)
		if (name_eq(f->name, h->name, h->nl))
			break;
	if (is_end(f))
		return fail(c, FERRY_EBADSTREAM, pd, "unknown field '%s'", h->nm);
	if (f->since_version > ver)
		return fail(c, FERRY_EVERSION, pd,
			    "field '%s' is from version %" PRIu32 ", stream has version %" PRIu32,
			    h->nm, f->since_version, ver);
	/* f is expected in a version-ver stream, so it is not skipped. */
	if (f < next)
		return fail(c, FERRY_EBADSTREAM, pd, "duplicate field '%s'", h->nm);
	return fail(c, FERRY_EBADSTREAM, pd, "missing field '%s'", next->name);
}

/* h's type and size against f, and its data (avail bytes left at data). */
static int field_check(struct dctx *c, unsigned pd, const ferry_field *f,
		       const struct field_hdr *h, const uint8_t *data, size_t avail)
{
	if (h->type != f->type) {
		const char *tn = type_name(h->type);
		if (tn)
			return fail(c, FERRY_EBADSTREAM, pd,
				    "field '%s': type %s in stream, %s expected", h->nm, tn,
				    type_name(f->type));
		return fail(c, FERRY_EBADSTREAM, pd,
			    "field '%s': type %u in stream, %s expected", h->nm, h->type,
			    type_name(f->type));
	}
	if (h->size != wire_size(f))
		return fail(c, FERRY_EBADSTREAM, pd,
			    "field '%s': size %" PRIu32 " in stream, %zu expected", h->nm, h->size,
			    wire_size(f));
	if (avail < h->size)
		return fail(c, FERRY_EBADSTREAM, pd, "truncated in field '%s'", h->nm);
	if (h->type == FERRY_FT_BOOL && data[0] > 1)
		return fail(c, FERRY_EBADSTREAM, pd, "field '%s': invalid bool value %u", h->nm,
			    data[0]);
	return 0;
}

/*
 * One field entry at *ppos (past its tag): header, the local field it
 * must be, its checks, then (applying pass) the store. Moves *ppos past
 * it and *pnext to the field expected after it.
 */
static int decode_field(struct dctx *c, unsigned pd, const ferry_vmsd *v, uint32_t ver,
			const uint8_t *buf, size_t len, size_t *ppos,
			const ferry_field **pnext)
{
	size_t pos = *ppos;
	struct field_hdr h;
	const ferry_field *f = NULL;
	int r = field_header(c, pd, buf, len, &pos, &h);
	if (r < 0)
		return r;
	if ((r = field_match(c, pd, v, ver, &h, *pnext, &f)) < 0)
		return r;
	if ((r = field_check(c, pd, f, &h, buf + pos, len - pos)) < 0)
		return r;
	if (c->apply)
		store_field(c->opaque, f, buf + pos);
	*pnext = expected_from(f + 1, ver);
	*ppos = pos + h.size;
	return 0;
}

static int decode_body(struct dctx *c, const ferry_vmsd *v, uint32_t ver, const uint8_t *buf,
		       size_t len, unsigned depth);

static int decode_sub(struct dctx *c, unsigned depth, const ferry_vmsd *v, const uint8_t *buf,
		      size_t len, size_t *ppos, long *plast)
{
	unsigned pd = depth + 1;
	size_t pos = *ppos;
	char nm[FERRY_NAME_MAX + 1];

	if (len - pos < 1)
		return fail(c, FERRY_EBADSTREAM, pd, "truncated subsection header");
	uint8_t nl = buf[pos++];
	if (!nl)
		return fail(c, FERRY_EBADSTREAM, pd, "subsection with an empty name");
	if (len - pos < nl)
		return fail(c, FERRY_EBADSTREAM, pd, "truncated subsection header");
	const uint8_t *name = buf + pos;
	pos += nl;
	show_name(nm, name, nl);
	if (len - pos < 8)
		return fail(c, FERRY_EBADSTREAM, pd, "truncated in subsection '%s'", nm);
	uint32_t sver = be32_from(buf + pos);
	uint32_t blen = be32_from(buf + pos + 4);
	pos += 8;

	long i = 0;
	const ferry_vmsd_sub *s = v->subsections;
	for (; s && s->vmsd; s++, i++)
		if (name_eq(s->vmsd->name, name, nl))
			break;
	if (!s || !s->vmsd)
		return fail(c, FERRY_EBADSTREAM, pd, "unknown subsection '%s'", nm);
	if (i == *plast)
		return fail(c, FERRY_EBADSTREAM, pd, "duplicate subsection '%s'", nm);
	if (i < *plast)
		return fail(c, FERRY_EBADSTREAM, pd, "subsection '%s' out of order", nm);
	*plast = i;
	int r = check_version(c, pd, s->vmsd, sver);
	if (r < 0)
		return r;
	if (blen > len - pos)
		return fail(c, FERRY_EBADSTREAM, pd, "truncated in subsection '%s'", nm);
	if (depth + 1 > VMSD_MAX_DEPTH) /* validation makes this unreachable */
		return fail(c, FERRY_EBADSTREAM, pd, "subsections nested too deeply");
	r = decode_body(c, s->vmsd, sver, buf + pos, blen, depth + 1);
	if (r < 0)
		return r;
	*ppos = pos + blen;
	return 0;
}

/* Decodes one body, which must span exactly [buf, buf + len). */
static int decode_body(struct dctx *c, const ferry_vmsd *v, uint32_t ver, const uint8_t *buf,
		       size_t len, unsigned depth)
{
	unsigned pd = depth + 1; /* path depth for messages about this body */
	const ferry_field *next = expected_from(fields_of(v), ver);
	long last_sub = -1;
	size_t pos = 0;
	int r;

	c->path[depth] = v->name;
	for (;;) {
		if (pos >= len)
			return fail(c, FERRY_EBADSTREAM, pd, "truncated before end tag");
		uint8_t tag = buf[pos++];
		switch (tag) {
		case TAG_END:
			if (!is_end(next))
				return fail(c, FERRY_EBADSTREAM, pd, "missing field '%s'",
					    next->name);
			if (pos != len)
				return fail(c, FERRY_EBADSTREAM, pd, "%zu trailing bytes",
					    len - pos);
			goto done;
		case TAG_FIELD:
			r = decode_field(c, pd, v, ver, buf, len, &pos, &next);
			break;
		case TAG_SUB:
			if (!is_end(next))
				return fail(c, FERRY_EBADSTREAM, pd, "missing field '%s'",
					    next->name);
			r = decode_sub(c, depth, v, buf, len, &pos, &last_sub);
			break;
		default:
			return fail(c, FERRY_EBADSTREAM, pd, "unknown tag 0x%02x", tag);
		}
		if (r < 0)
			return r;
	}
done:
	if (c->apply && v->post_load) {
		r = v->post_load(c->opaque, ver);
		if (r < 0)
			return fail(c, r, pd, "post_load failed: %s", ferry_strerror(r));
	}
	if (c->apply && v->post_load_msg) {
		char msg[256] = "";
		r = v->post_load_msg(c->opaque, ver, msg, sizeof(msg));
		if (r < 0)
			return fail(c, r, pd, "%s", msg[0] ? msg : ferry_strerror(r));
	}
	return 0;
}

int ferry_vmsd_decode(const ferry_vmsd *vmsd, void *opaque, uint32_t stream_version,
		      const void *buf, size_t len, char *err, size_t err_len)
{
	struct dctx c = { .err = err, .err_len = err_len, .opaque = opaque };

	if (err && err_len)
		err[0] = '\0';
	if (!vmsd || !opaque || (!buf && len))
		return fail(&c, -EINVAL, 0, "invalid arguments");
	if (validate(vmsd, 0) < 0) {
		if (!name_ok(vmsd->name))
			return fail(&c, -EINVAL, 0, "invalid device state description");
		c.path[0] = vmsd->name;
		return fail(&c, -EINVAL, 1, "invalid device state description");
	}
	int r = check_version(&c, 0, vmsd, stream_version);
	if (r < 0)
		return r;
	/* Pass 1 checks everything and stores nothing; pass 2 applies. */
	r = decode_body(&c, vmsd, stream_version, buf, len, 0);
	if (r < 0)
		return r;
	c.apply = true;
	return decode_body(&c, vmsd, stream_version, buf, len, 0);
}
