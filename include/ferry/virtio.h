/* SPDX-License-Identifier: MIT */
/*
 * Device-side virtio for VMMs embedding Ferry: a guest-physical address map
 * over the VM's RAM blocks, a split virtqueue, and a virtio-balloon device
 * with the free page hint feature.
 *
 * Guest-physical addresses. The embedder places each RAM block at a
 * guest-physical base of its choice (ferry_gpa_region); the block then
 * covers [gpa, gpa + size) and nothing else is guest RAM. The map is built
 * once (a sorted table, no callbacks) and is immutable afterwards, so any
 * number of queues on any threads translate through it without a lock.
 * Blocks must stay registered and mapped while a map refers to them.
 *
 * The split virtqueue follows the virtio 1.x split ring: the layout, flags
 * and vring_need_event() come from the kernel's <linux/virtio_ring.h>; all
 * ring fields are little-endian. The guest is untrusted: every index and
 * address it writes is checked before use, and a violation marks the queue
 * *broken* (sticky, with a message naming the field and the values seen;
 * see docs/virtio.md for the full list of checks). The call that finds the
 * violation returns -EINVAL, every later call FERRY_EBROKEN, until
 * ferry_vq_reset(). A broken queue never reads or writes outside guest RAM.
 *
 * Migration. A queue's state (ring addresses, negotiated features, last
 * avail index, used index, event-index state, heads in flight, the broken
 * flag and its message) is described by ferry_vq_vmsd(); register it with
 * ferry_device_register() with the queue as opaque. After a load, the
 * queue re-validates itself against guest RAM (ferry_vq_revalidate(), also
 * the vmsd's post_load), and chains that were popped but not pushed on the
 * source are handed out again by ferry_vq_pop_inflight(): none is lost, and
 * none is repeated as long as the device completes each exactly once.
 *
 * Threads. A map: any thread. A queue: one thread at a time (the device's
 * thread; device state is saved and loaded while that thread is quiesced).
 * The guest writes the rings concurrently; the queue orders its accesses
 * with the barriers the virtio specification requires. The balloon: see its
 * section below.
 *
 * Dirty tracking. Every write the queue makes to guest RAM (used ring,
 * flags, event index) is reported with ferry_ram_mark_dirty(). A device
 * that writes into device-writable buffers reports those itself
 * (ferry_gpa_map_mark_dirty()).
 */
#ifndef FERRY_VIRTIO_H
#define FERRY_VIRTIO_H

#include <sys/uio.h>
#include <linux/virtio_balloon.h>
#include <linux/virtio_ring.h>

#include "ferry/hint.h"
#include "ferry/vm.h"
#include "ferry/vmstate.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Guest-physical address map                                          */

/* Where one RAM block sits in guest-physical space. */
typedef struct ferry_gpa_region {
	ferry_ram_block_t *rb;
	uint64_t gpa; /* page aligned; the block covers [gpa, gpa + size) */
} ferry_gpa_region;

typedef struct ferry_gpa_map ferry_gpa_map_t;

/* At most this many regions per map (one per RAM block). */
#define FERRY_GPA_MAP_MAX 64

/*
 * Builds a map from n regions (any order). Returns 0, or -EINVAL (NULL
 * block, gpa not page aligned, gpa + size overflows, two regions overlap,
 * n == 0 or > FERRY_GPA_MAP_MAX) or -ENOMEM. Thread: any.
 */
FERRY_EXTERN int ferry_gpa_map_create(const ferry_gpa_region *regions, unsigned n,
				      ferry_gpa_map_t **out);
/* Frees a map no queue uses any more. NULL is a no-op. */
FERRY_EXTERN void ferry_gpa_map_destroy(ferry_gpa_map_t *map);

/*
 * Translates [gpa, gpa + len) (len >= 1), which must lie inside one RAM
 * block. Returns its host address (and the block and the offset in it, if
 * rb / offset are not NULL), or NULL if any byte is outside guest RAM or
 * the range spans two blocks. Thread: any.
 */
FERRY_EXTERN void *ferry_gpa_map_translate(const ferry_gpa_map_t *map, uint64_t gpa,
					   uint64_t len, ferry_ram_block_t **rb,
					   uint64_t *offset);

/*
 * ferry_ram_mark_dirty() for a guest-physical range the device wrote
 * (parts outside guest RAM are ignored). Thread: any.
 */
FERRY_EXTERN void ferry_gpa_map_mark_dirty(const ferry_gpa_map_t *map, uint64_t gpa,
					   uint64_t len);

/* ------------------------------------------------------------------ */
/* Split virtqueue (device side)                                       */

/* Largest ring (QEMU's VIRTQUEUE_MAX_SIZE). */
#define FERRY_VQ_MAX_SIZE 1024u
/* Room for a broken queue's message, NUL included. */
#define FERRY_VQ_ERROR_MAX 192u

typedef struct ferry_vq ferry_vq_t;

/* What the driver programmed: the queue's size and its three areas. */
typedef struct ferry_vq_config {
	/*
	 * Negotiated device features; the queue uses VIRTIO_RING_F_EVENT_IDX
	 * and VIRTIO_RING_F_INDIRECT_DESC (bit numbers from linux/virtio_ring.h).
	 */
	uint64_t features;
	uint16_t num;   /* ring size: a power of two, 1..FERRY_VQ_MAX_SIZE */
	uint64_t desc;  /* guest-physical, 16-byte aligned, 16 * num bytes */
	uint64_t avail; /* 2-byte aligned, 6 + 2 * num bytes */
	uint64_t used;  /* 4-byte aligned, 6 + 8 * num bytes */
} ferry_vq_config;

/*
 * One popped descriptor chain. The caller provides the arrays (cap
 * entries each; gpa may be NULL); ferry_vq_pop() fills them: iov[0, out_num)
 * are the device-readable buffers, iov[out_num, out_num + in_num) the
 * device-writable ones, in chain order, each inside one RAM block.
 */
typedef struct ferry_vq_elem {
	struct iovec *iov;
	uint64_t *gpa; /* guest-physical address of each iov, or NULL */
	unsigned cap;
	uint16_t head; /* give it back with ferry_vq_push() */
	unsigned out_num;
	unsigned in_num;
} ferry_vq_elem;

/*
 * Creates a queue over map (which must outlive it), not yet set up.
 * Returns 0, -EINVAL or -ENOMEM. Thread: any.
 */
FERRY_EXTERN int ferry_vq_create(const ferry_gpa_map_t *map, ferry_vq_t **out);
FERRY_EXTERN void ferry_vq_destroy(ferry_vq_t *vq);

/*
 * The driver enabled the queue with cfg: indices start at 0. Checks the
 * size, alignment and that each area lies inside one RAM block; on a
 * violation the queue is broken and -EINVAL returned.
 */
FERRY_EXTERN int ferry_vq_setup(ferry_vq_t *vq, const ferry_vq_config *cfg);

/* Device reset: not set up, not broken, no request in flight. */
FERRY_EXTERN void ferry_vq_reset(ferry_vq_t *vq);

/* Set up (by ferry_vq_setup() or a load) and not reset since. */
FERRY_EXTERN bool ferry_vq_ready(const ferry_vq_t *vq);

/*
 * Takes the next available chain. Returns 1 (elem filled, the head now in
 * flight), 0 (nothing available), -EINVAL (guest violation: the queue is
 * now broken, nothing was consumed), FERRY_EBROKEN (broken earlier) or
 * -ENODEV (not set up). elem->cap smaller than the chain is a violation
 * too: give the largest chain the device accepts.
 */
FERRY_EXTERN int ferry_vq_pop(ferry_vq_t *vq, ferry_vq_elem *elem);

/*
 * After a load: hands out again, one per call, the chains that were in
 * flight at save time (in head order), re-validated like ferry_vq_pop().
 * Returns 1, 0 (none left) or a negative errno as ferry_vq_pop().
 */
FERRY_EXTERN int ferry_vq_pop_inflight(ferry_vq_t *vq, ferry_vq_elem *elem);

/*
 * Returns head to the driver with len bytes written, and publishes it
 * (used->idx). Returns 0, -EINVAL (head not in flight: a device bug, the
 * queue stays usable), FERRY_EBROKEN or -ENODEV.
 */
FERRY_EXTERN int ferry_vq_push(ferry_vq_t *vq, uint16_t head, uint32_t len);

/* Heads popped and not pushed yet. */
FERRY_EXTERN unsigned ferry_vq_inflight(const ferry_vq_t *vq);

/*
 * Whether the device wants the driver's kicks: VRING_USED_F_NO_NOTIFY, or
 * with VIRTIO_RING_F_EVENT_IDX the avail event index. After enabling, call
 * ferry_vq_pop() again: chains made available meanwhile were not kicked.
 */
FERRY_EXTERN void ferry_vq_set_notification(ferry_vq_t *vq, bool enable);

/*
 * After pushes: whether the driver must be interrupted now
 * (VRING_AVAIL_F_NO_INTERRUPT, or with VIRTIO_RING_F_EVENT_IDX
 * vring_need_event() over the used event index). Records the used index
 * signalled. False for a broken or not set up queue.
 */
FERRY_EXTERN bool ferry_vq_need_notify(ferry_vq_t *vq);

FERRY_EXTERN bool ferry_vq_is_broken(const ferry_vq_t *vq);
/* Why the queue is broken ("" if it is not). Valid until reset or destroy. */
FERRY_EXTERN const char *ferry_vq_error(const ferry_vq_t *vq);

/*
 * Migration: the description of a queue's state (opaque: the ferry_vq_t).
 * Its post_load calls ferry_vq_revalidate().
 */
FERRY_EXTERN const ferry_vmsd *ferry_vq_vmsd(void);

/*
 * Checks freshly loaded state against this VM and guest RAM and prepares
 * ferry_vq_pop_inflight(). Returns FERRY_EBADSTREAM (the state is
 * inconsistent in itself: size, in-flight set vs indices, message) or
 * FERRY_EMISMATCH (the rings are not inside this VM's guest RAM): the load
 * fails. Rings whose contents contradict the state (used index in RAM not
 * the one saved, avail index too far ahead) break the queue instead, with
 * a return of 0: that is the guest's doing, not the stream's.
 */
FERRY_EXTERN int ferry_vq_revalidate(ferry_vq_t *vq);

/* ------------------------------------------------------------------ */
/* virtio-balloon: free page hints (device side)                       */

/*
 * Protocol (VIRTIO_BALLOON_F_FREE_PAGE_HINT, as Linux's driver and QEMU's
 * device speak it): the host publishes a command id in the config
 * (free_page_hint_cmd_id); ids start at FERRY_BALLOON_CMD_ID_MIN and
 * increase (wrapping back to it), VIRTIO_BALLOON_CMD_ID_STOP (0) stops a
 * report, VIRTIO_BALLOON_CMD_ID_DONE (1) ends the hinting phase. On a new
 * id the guest sends, on the free page queue, a chain with one readable
 * 4-byte buffer holding the id (le32); then chains of writable buffers
 * whose guest-physical ranges ARE free memory (the device never writes
 * them); then a readable buffer holding VIRTIO_BALLOON_CMD_ID_STOP.
 * Whole pages inside a range are hinted; buffers of an older id, or after
 * the host's stop, are ignored (and counted).
 *
 * Threads: ferry_balloon_config_read() from any thread (the guest's);
 * everything else from one thread at a time. An internal lock (per
 * balloon) makes hint_start/stop/done atomic with respect to a poll: once
 * ferry_balloon_hint_stop() returned, no callback runs for that id.
 */
#define FERRY_BALLOON_CMD_ID_MIN 0x80000000u

typedef struct ferry_balloon ferry_balloon_t;

/*
 * Pages [first_page, first_page + npages) of rb (FERRY_PAGE_SIZE units,
 * block-relative) are free in the guest (ferry/hint.h). Called from
 * ferry_balloon_hint_poll() with the balloon's lock held: it must not
 * call ferry_balloon_* functions.
 */
typedef ferry_hint_fn ferry_balloon_hint_fn;

typedef struct ferry_balloon_stats {
	uint64_t hint_cmds;       /* command ids published */
	uint64_t reports;         /* reports the guest ended with STOP */
	uint64_t buffers_hinted;  /* buffers of the current id */
	uint64_t pages_hinted;    /* pages passed to the callback */
	uint64_t ignored_buffers; /* old id, before an id, or after the stop */
} ferry_balloon_stats;

/* Creates a balloon over map (which must outlive it). 0, -EINVAL, -ENOMEM. */
FERRY_EXTERN int ferry_balloon_create(const ferry_gpa_map_t *map, ferry_balloon_t **out);
FERRY_EXTERN void ferry_balloon_destroy(ferry_balloon_t *b);

/* Features the device offers: VIRTIO_BALLOON_F_FREE_PAGE_HINT, ring features. */
FERRY_EXTERN uint64_t ferry_balloon_features(const ferry_balloon_t *b);

/* The guest reads the device config (little-endian fields). Thread: any. */
FERRY_EXTERN void ferry_balloon_config_read(const ferry_balloon_t *b,
					    struct virtio_balloon_config *cfg);

/* The guest enabled the free page queue (see ferry_vq_setup()). */
FERRY_EXTERN int ferry_balloon_setup_vq(ferry_balloon_t *b, const ferry_vq_config *cfg);
/* The free page queue, to register its state (ferry_vq_vmsd()) or inspect. */
FERRY_EXTERN ferry_vq_t *ferry_balloon_free_page_vq(ferry_balloon_t *b);

/*
 * The balloon's own device state ("virtio-balloon", version 1): the next
 * command id and the one published in the config. Register it for b on
 * both sides, next to its free page queue:
 *   ferry_device_register(vm, "virtio-balloon", 0, ferry_balloon_vmsd(), b)
 * so that command ids are never reused after a migration (a report the
 * guest queued before switchover is then ignored on the destination, never
 * taken for a later migration's). Loading it publishes the source's id,
 * for which nothing is hinted. Not while b is polled.
 */
FERRY_EXTERN const ferry_vmsd *ferry_balloon_vmsd(void);

/*
 * Publishes a new command id (returned): hints from now on are for it
 * only. The migration calls it right after each dirty-log sync.
 */
FERRY_EXTERN uint32_t ferry_balloon_hint_start(ferry_balloon_t *b);
/* Publishes STOP: every buffer from now on is ignored. */
FERRY_EXTERN void ferry_balloon_hint_stop(ferry_balloon_t *b);
/* Publishes DONE: the guest may reuse memory it held for the report. */
FERRY_EXTERN void ferry_balloon_hint_done(ferry_balloon_t *b);

/*
 * Processes every chain available on the free page queue (each goes back
 * used, length 0) and calls fn for the pages of buffers of the current id.
 * Returns the number of chains processed, or a negative errno as
 * ferry_vq_pop() (-EINVAL also for a malformed chain: a command buffer
 * that is not 4 bytes, readable and writable buffers mixed); the queue is
 * then broken and the rest of the report lost. A queue not set up yet
 * returns 0.
 */
FERRY_EXTERN int ferry_balloon_hint_poll(ferry_balloon_t *b, ferry_balloon_hint_fn fn,
					 void *opaque);

/* Whether the guest sent STOP for the current id (its report is complete). */
FERRY_EXTERN bool ferry_balloon_hint_complete(const ferry_balloon_t *b);

FERRY_EXTERN void ferry_balloon_get_stats(ferry_balloon_t *b, ferry_balloon_stats *st);

/*
 * The balloon as a free page hint provider (ferry/hint.h), opaque the
 * ferry_balloon_t: start, stop and done are ferry_balloon_hint_start/stop/
 * done, poll is ferry_balloon_hint_poll, complete is
 * ferry_balloon_hint_complete, error is ferry_vq_error() of its free page
 * queue. Outgoing migrations of vm then skip the pages the guest reports
 * free (b must stay alive while registered):
 *   ferry_vm_set_hint_ops(vm, ferry_balloon_hint_ops(), b)
 * Thread: any (a constant table).
 */
FERRY_EXTERN const ferry_hint_ops *ferry_balloon_hint_ops(void);

#ifdef __cplusplus
}
#endif
#endif /* FERRY_VIRTIO_H */
