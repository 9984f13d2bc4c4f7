/* SPDX-License-Identifier: MIT */
/* Umbrella header for libferry. See docs/architecture.md. */
#ifndef FERRY_H
#define FERRY_H

#include "ferry/version.h"
#include "ferry/common.h"
#include "ferry/vm.h"
#include "ferry/vmstate.h"
#include "ferry/device.h"
#include "ferry/migration.h"
#include "ferry/hint.h"
#include "ferry/virtio.h"
#include "ferry/transport.h"
#include "ferry/tls.h"

#endif /* FERRY_H */
