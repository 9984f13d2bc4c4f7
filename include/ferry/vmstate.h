/* SPDX-License-Identifier: MIT */
/*
 * Device state: versioned, self-describing descriptions of what a device
 * migrates.
 *
 * A device describes its state with a ferry_vmsd: a name, a version, the
 * oldest version it can still load, a table of fields (each a member of the
 * device's struct, with the version that introduced it) and optional
 * subsections (sent only when their `needed` callback says so). On the wire
 * every field carries its name, type and size, so a destination that cannot
 * load a stream says exactly why ("device 'cpu' instance 1: field 'steps'
 * has type u32 in the stream, u64 here") instead of misreading bytes.
 *
 * Load rules:
 *  - stream version > local version, or < min_version: -FERRY_EVERSION;
 *  - every local field with since_version <= stream version must be present,
 *    in table order, with the same type and size;
 *  - an unknown field or subsection is an error (state would be lost);
 *  - a subsection absent from the stream is not loaded (defaults stay).
 */
#ifndef FERRY_VMSTATE_H
#define FERRY_VMSTATE_H

#include "ferry/vm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ferry_field_type {
	FERRY_FT_END = 0, /* terminates a field table */
	FERRY_FT_U8 = 1,
	FERRY_FT_U16 = 2,
	FERRY_FT_U32 = 3,
	FERRY_FT_U64 = 4,
	FERRY_FT_I32 = 5,
	FERRY_FT_I64 = 6,
	FERRY_FT_BOOL = 7,
	FERRY_FT_BYTES = 8, /* fixed-size byte array of `size` bytes */
	FERRY_FT_U64_ARRAY = 9, /* `size` bytes = size / 8 big-endian u64s */
} ferry_field_type;

typedef struct ferry_field {
	const char *name;
	ferry_field_type type;
	size_t offset; /* in the device's struct */
	size_t size;   /* bytes in the device's struct */
	uint32_t since_version;
} ferry_field;

struct ferry_vmsd;

typedef struct ferry_vmsd_sub {
	const struct ferry_vmsd *vmsd;
	/* Sent only if needed(opaque) is true; NULL means always. */
	bool (*needed)(void *opaque);
} ferry_vmsd_sub;

typedef struct ferry_vmsd {
	const char *name;
	uint32_t version;
	uint32_t min_version;
	const ferry_field *fields; /* ends with FERRY_FIELD_END */
	const ferry_vmsd_sub *subsections; /* ends with {NULL}; may be NULL */
	/* Optional hooks; each returns 0 or a negative errno. */
	int (*pre_save)(void *opaque);
	int (*post_load)(void *opaque, uint32_t version);
	/*
	 * Like post_load (set one or the other), for state that can only be
	 * judged whole: on failure it writes why into msg (msg_len > 0), and
	 * the load's error says that ("device 'x': ring size 3 is not a power
	 * of two") instead of only the errno.
	 */
	int (*post_load_msg)(void *opaque, uint32_t version, char *msg, size_t msg_len);
} ferry_vmsd;

#define FERRY__FIELD(st, m, t, v) \
	{ #m, (t), offsetof(st, m), sizeof(((st *)0)->m), (v) }
#define FERRY_FIELD_U8(st, m) FERRY__FIELD(st, m, FERRY_FT_U8, 0)
#define FERRY_FIELD_U16(st, m) FERRY__FIELD(st, m, FERRY_FT_U16, 0)
#define FERRY_FIELD_U32(st, m) FERRY__FIELD(st, m, FERRY_FT_U32, 0)
#define FERRY_FIELD_U64(st, m) FERRY__FIELD(st, m, FERRY_FT_U64, 0)
#define FERRY_FIELD_I32(st, m) FERRY__FIELD(st, m, FERRY_FT_I32, 0)
#define FERRY_FIELD_I64(st, m) FERRY__FIELD(st, m, FERRY_FT_I64, 0)
#define FERRY_FIELD_BOOL(st, m) FERRY__FIELD(st, m, FERRY_FT_BOOL, 0)
#define FERRY_FIELD_BYTES(st, m) FERRY__FIELD(st, m, FERRY_FT_BYTES, 0)
#define FERRY_FIELD_U64_ARRAY(st, m) FERRY__FIELD(st, m, FERRY_FT_U64_ARRAY, 0)
/* Same, for a field added in version v. */
#define FERRY_FIELD_U64_V(st, m, v) FERRY__FIELD(st, m, FERRY_FT_U64, v)
#define FERRY_FIELD_U32_V(st, m, v) FERRY__FIELD(st, m, FERRY_FT_U32, v)
#define FERRY_FIELD_END { NULL, FERRY_FT_END, 0, 0, 0 }

/*
 * Registers a device: (id, instance) names it in the stream; opaque is the
 * struct the field offsets apply to. Devices are saved in registration order
 * after RAM at switchover and loaded on the destination before its vCPUs
 * start.
 * Returns 0, -EINVAL (bad table: unknown type, size not matching the type),
 * -EEXIST, -EBUSY (a migration runs), -ENOMEM.
 */
FERRY_EXTERN int ferry_device_register(ferry_vm_t *vm, const char *id,
				       uint32_t instance, const ferry_vmsd *vmsd,
				       void *opaque);

/*
 * Encodes/decodes one vmsd to/from a flat buffer (the same bytes the stream
 * carries in a device section body). For tests and for embedders that want
 * snapshots. encode returns the byte count written (or needed, if it exceeds
 * cap) or a negative errno. decode returns 0 or a negative errno and, on
 * error, writes a message into err (if err_len > 0).
 */
FERRY_EXTERN int64_t ferry_vmsd_encode(const ferry_vmsd *vmsd, void *opaque,
				       void *buf, size_t cap);
FERRY_EXTERN int ferry_vmsd_decode(const ferry_vmsd *vmsd, void *opaque,
				   uint32_t stream_version, const void *buf,
				   size_t len, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif /* FERRY_VMSTATE_H */
