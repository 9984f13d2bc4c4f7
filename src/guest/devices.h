/* SPDX-License-Identifier: MIT */
/*
 * The synthetic guest's live devices (devices.c), internal to the guest:
 * guest.c creates them with the guest, runs their step from the vCPU step
 * loop, and registers them in ferry_guest_attach(); oracle.c compares
 * their memory through ferry_guest_dev_mem() (guest.h).
 *
 * Thread: create/destroy/reset/attach on the guest's control thread with
 * the vCPUs stopped; step on vCPU i's thread (or the oracle's twin) for
 * vCPU i's own slice of each device; the ops on libferry's threads.
 */
#ifndef FERRY_GUEST_DEVICES_H
#define FERRY_GUEST_DEVICES_H

#include <stdbool.h>
#include <stdint.h>

#include "guest.h"

typedef struct guest_devs guest_devs;

/* cfg->devices devices of cfg->devmem bytes (NULL in *out when 0). */
int ferry_guest_devs_create(const ferry_guest_config *cfg, bool incoming, guest_devs **out);
void ferry_guest_devs_destroy(guest_devs *ds);
/* Back to the memory of create (the fill, or zeros when incoming). */
void ferry_guest_devs_reset(guest_devs *ds, bool incoming);
/* ferry_live_device_register for each ("gdev", instance i). */
int ferry_guest_devs_attach(guest_devs *ds, ferry_vm_t *vm);
/* Step k of vCPU `vcpu`: 8 bytes of device (k mod N), in the vCPU's slice, from s0. */
void ferry_guest_devs_step(guest_devs *ds, unsigned vcpu, uint64_t k, uint64_t s0);
unsigned ferry_guest_devs_count(const guest_devs *ds);
void ferry_guest_devs_mem(const guest_devs *ds, unsigned i, uint8_t **host, uint64_t *size);
int ferry_guest_devs_state(const guest_devs *ds, unsigned i);

#endif
