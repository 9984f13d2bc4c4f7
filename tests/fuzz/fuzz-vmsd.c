/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the device-state decoder (src/lib/stream/vmstate.c,
 * ferry_vmsd_decode) behind a SECTION_FULL record as the destination reads
 * one (src/lib/migration/participant.c, vmsd_load): the section header
 * (ferry__wire_get_section_start), the body's be32 length (at most
 * FERRY_DEVICE_STATE_MAX), the body, the footer, read from a ferry_chan
 * over a memfd holding the input. The body is decoded against one of
 * three descriptions, picked by the section's instance: "dev" (every
 * field type, fields added in versions 2 and 3, a subsection with a
 * nested one, a subsection sent when needed whose post_load_msg refuses
 * an odd value), "tiny" (one u8) and "subs" (no fields, subsections only).
 *
 * Oracles, beyond the sanitizers: an accepted body had a version within
 * [min_version, version], left bools 0 or 1 and the bytes around the
 * device struct untouched, and re-encodes (ferry_vmsd_encode) into a body
 * that decodes to the same struct; a refused one says why (a non-empty
 * message) and, unless a post_load hook refused it, left the struct as
 * it was (the decoder checks everything before it stores anything). What
 * the channel refuses sets its sticky error (that code, a message), and
 * every later read fails with it.
 *
 * Input layout: records as on the main channel, each FERRY_REC_SECTION_FULL
 * (0x04), be32 id, idstr, be32 instance, be32 version, be32 length, the
 * body, the footer (0x7e, be32 id). Another type byte, or the end of the
 * input, ends the run.
 *
 * FUZZ_ECHO=1 in the environment prints each body's outcome.
 *
 * Built by tests/fuzz/run.sh with vmstate.c and the channel and wire
 * sources. Thread: libFuzzer's one thread.
 */
#include "stream/wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ferry/vmstate.h"
#include "fuzz-chan.h"

enum { MAX_RECS = 16, GUARD = 32 };

typedef struct dev {
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	uint64_t u64;
	int32_t i32;
	int64_t i64;
	bool flag;
	uint8_t bytes[13];
	uint64_t arr[4];
	uint64_t v2;
	uint32_t v3;
	uint32_t sub_a;
	bool sub_b;
	uint8_t deep[5];
	uint32_t odd; /* "opt": post_load_msg refuses an odd value */
} dev;

static bool post_load_refused;

static const ferry_field deep_fields[] = { FERRY_FIELD_BYTES(dev, deep), FERRY_FIELD_END };
static const ferry_vmsd deep_vmsd = { "deep", 1, 1, deep_fields };
static const ferry_vmsd_sub sub1_subs[] = { { &deep_vmsd, NULL }, { NULL } };
static const ferry_field sub1_fields[] = {
	FERRY_FIELD_U32(dev, sub_a),
	FERRY_FIELD_BOOL(dev, sub_b),
	FERRY_FIELD_END,
};
static const ferry_vmsd sub1_vmsd = { "sub1", 2, 1, sub1_fields, sub1_subs };

static bool opt_needed(void *opaque)
{
	return ((dev *)opaque)->odd != 0;
}

static int opt_post_load(void *opaque, uint32_t version, char *msg, size_t msg_len)
{
	(void)version;
	if (((dev *)opaque)->odd % 2) {
		post_load_refused = true;
		snprintf(msg, msg_len, "odd value %u", ((dev *)opaque)->odd);
		return -EINVAL;
	}
	return 0;
}

static const ferry_field opt_fields[] = { FERRY_FIELD_U32(dev, odd), FERRY_FIELD_END };
static const ferry_vmsd opt_vmsd = { "opt", 1, 1, opt_fields, .post_load_msg = opt_post_load };
static const ferry_vmsd_sub dev_subs[] = { { &sub1_vmsd, NULL }, { &opt_vmsd, opt_needed }, { NULL } };
static const ferry_field dev_fields[] = {
	FERRY_FIELD_U8(dev, u8),
	FERRY_FIELD_U16(dev, u16),
	FERRY_FIELD_U32(dev, u32),
	FERRY_FIELD_U64(dev, u64),
	FERRY_FIELD_I32(dev, i32),
	FERRY_FIELD_I64(dev, i64),
	FERRY_FIELD_BOOL(dev, flag),
	FERRY_FIELD_BYTES(dev, bytes),
	FERRY_FIELD_U64_ARRAY(dev, arr),
	FERRY_FIELD_U64_V(dev, v2, 2),
	FERRY_FIELD_U32_V(dev, v3, 3),
	FERRY_FIELD_END,
};
static const ferry_vmsd dev_vmsd = { "dev", 3, 1, dev_fields, dev_subs };
static const ferry_field tiny_fields[] = { FERRY_FIELD_U8(dev, u8), FERRY_FIELD_END };
static const ferry_vmsd tiny_vmsd = { "tiny", 1, 1, tiny_fields };
static const ferry_vmsd subs_vmsd = { "subs", 2, 2, NULL, dev_subs };
static const ferry_vmsd *const descs[] = { &dev_vmsd, &tiny_vmsd, &subs_vmsd };

static int memfd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	memfd = memfd_create("fuzz-vmsd", MFD_CLOEXEC);
	CHECK(memfd >= 0);
	return 0;
}

/* The device struct between two guards, filled with a pattern. */
typedef struct slot {
	uint8_t pre[GUARD];
	dev d;
	uint8_t post[GUARD];
} slot;

static void slot_init(slot *s)
{
	memset(s, 0xa5, sizeof(*s));
	s->d.flag = false;
	s->d.sub_b = true;
	s->d.odd = 0;
}

static void check_guards(const slot *s)
{
	for (size_t i = 0; i < GUARD; i++)
		CHECK(s->pre[i] == 0xa5 && s->post[i] == 0xa5);
}

/* An accepted body: its struct re-encodes into one that decodes to the same struct. */
static void check_accepted(const ferry_vmsd *v, const slot *s, uint32_t version)
{
	char err[256];
	CHECK(version >= v->min_version && version <= v->version);
	check_guards(s);
	CHECK(*(const uint8_t *)&s->d.flag <= 1 && *(const uint8_t *)&s->d.sub_b <= 1);
	dev copy = s->d;
	int64_t n = ferry_vmsd_encode(v, &copy, NULL, 0);
	CHECK(n > 0);
	uint8_t *buf = malloc((size_t)n);
	CHECK(buf && ferry_vmsd_encode(v, &copy, buf, (size_t)n) == n);
	slot t;
	slot_init(&t);
	t.d = s->d;
	CHECK(ferry_vmsd_decode(v, &t.d, v->version, buf, (size_t)n, err, sizeof(err)) == 0);
	CHECK(!memcmp(&t, s, sizeof(t)));
	free(buf);
}

static int section(ferry_chan *c)
{
	uint32_t id, instance, version, len;
	char idstr[FERRY_NAME_MAX + 1];
	int r = ferry__wire_get_section_start(c, &id, idstr, &instance, &version);
	if (r)
		return r;
	CHECK(strlen(idstr) >= 1 && strlen(idstr) <= FERRY_NAME_MAX);
	ferry__chan_ctx_name(c, "device state");
	if ((r = ferry__wire_get_device_len(c, &len)))
		return r;
	if (len > FERRY_DEVICE_STATE_MAX)
		return ferry__chan_fail(c, FERRY_EBADSTREAM, "device state of %u bytes", len);
	uint8_t *body = malloc(len ? len : 1);
	CHECK(body);
	if ((r = ferry__chan_read(c, body, len))) {
		free(body);
		return r;
	}
	const ferry_vmsd *v = descs[instance % 3];
	slot s, before;
	slot_init(&s);
	before = s;
	char err[256];
	post_load_refused = false;
	r = ferry_vmsd_decode(v, &s.d, version, body, len, err, sizeof(err));
	free(body);
	if (getenv("FUZZ_ECHO")) /* to see what a seed does */
		fprintf(stderr, "%s v%u: %s\n", v->name, version, r ? err : "accepted");
	if (r == 0) {
		check_accepted(v, &s, version);		return ferry__wire_get_footer(c, id);
	}
	CHECK(r < 0 && err[0]);
	check_guards(&s);
	CHECK(post_load_refused || !memcmp(&s, &before, sizeof(s)));
	return ferry__chan_fail(c, r, "device '%s' instance %u: %s", idstr, instance, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ferry_chan c;
	fuzz_chan_open(&c, memfd, data, size);
	int r = 0;
	for (int k = 0; k < MAX_RECS && !r; k++) {
		uint8_t type;
		ferry__chan_ctx(&c, "record");
		if ((r = ferry__wire_get_record(&c, &type)))
			break;
		if (type != FERRY_REC_SECTION_FULL)
			break;
		r = section(&c);
	}
	if (r < 0)
		fuzz_check_refused(&c, r);
	ferry__chan_close(&c);
	return 0;
}
