/* SPDX-License-Identifier: MIT */
/* The `ferry` command line: subcommands and shared helpers. */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include <jansson.h>
#include <stdint.h>

#include "ferry.h"

int ferry_cli_host(int argc, char **argv);
int ferry_cli_demo(int argc, char **argv);

/* Parses "300", "4K", "1M", "2G" (powers of 1024); -EINVAL on junk. */
int ferry_cli_parse_size(const char *s, uint64_t *out);
/* Applies "name=value" to params (downtime-limit, max-bandwidth, x-max-passes). */
int ferry_cli_set_param(ferry_mig_params *p, const char *kv, char *err, size_t err_len);
/* query-migrate-like JSON of info (QEMU's key names where they exist). */
json_t *ferry_cli_info_json(const ferry_mig_info *info);

#endif
