/* SPDX-License-Identifier: MIT */
/*
 * Capability switchover-ack (swack.c): the participant, and the calls of
 * the two places that take part in it: the source's return path thread
 * (the message) and the live devices' destination side (each PRE_COPY
 * device's approval).
 *
 * Thread: ferry__swack_src_rp_msg on mig/src/rp; ferry__swack_need and
 * ferry__swack_approve on mig/dst/main only (the ack is written there).
 */
#ifndef FERRY_MIGRATION_SWACK_H
#define FERRY_MIGRATION_SWACK_H

#include <stddef.h>
#include <stdint.h>

#include "migration/participant.h"

struct ferry_migration;

/* A return path message of type/len: 0 if it was SWITCHOVER_ACK, else -ENOMSG. */
int ferry__swack_src_rp_msg(struct ferry_migration *m, uint16_t type, size_t len);
/* Destination, before the stream: n devices must approve before the ack. */
void ferry__swack_need(struct ferry_migration *m, unsigned n);
/* Destination: one device's initial data is loaded; the ack goes on c once all did. */
int ferry__swack_approve(struct ferry_migration *m, ferry_chan *c);

#endif
