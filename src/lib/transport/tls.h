/* SPDX-License-Identifier: MIT */
/*
 * TLS sessions on migration connections (the public face, credentials and
 * authz lists, is ferry/tls.h). All of Ferry's TLS code is in tls.c.
 *
 * DESIGN: a session wraps one connected, blocking socket after
 * ferry__tls_open() did the handshake and the checks (certificate chain
 * and hostname, or the pre-shared key; authz; then the server's one-byte
 * acceptance, so that a refused client never sends guest data). The
 * channel (stream/chan.c) and the multifd senders then read and write
 * through it instead of the socket. GnuTLS allows one thread sending and another receiving on one
 * session, which is what a channel with a return path does (chan.h).
 * TLS 1.3 only; no renegotiation exists in 1.3. Failures are negative
 * errnos (-EPROTO for a TLS failure, -EACCES for a refused peer) with a
 * message that says which side refused what.
 *
 * Thread: a session, one reader and one writer (chan.h's rule);
 * cancel with shutdown(2) on the socket.
 */
#ifndef FERRY_LIB_TLS_H
#define FERRY_LIB_TLS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "ferry/migration.h"
#include "ferry/tls.h"
#include "util/error.h"

typedef struct ferry_tls ferry_tls;

/* What a migration's connections use: its own references. */
typedef struct ferry_tls_cfg {
	ferry_tls_creds *creds; /* NULL: plaintext */
	ferry_tls_authz *authz; /* NULL: any peer the CA vouches for */
	char hostname[256];     /* client: the name the server's certificate must carry */
} ferry_tls_cfg;

/*
 * Takes references on p's tls_creds and tls_authz for a migration on uri
 * (when it starts, so the caller may drop its own at once); the hostname
 * is p->tls_hostname, else uri's host (tcp:, NULL uri: none).
 */
void ferry__tls_cfg_take(ferry_tls_cfg *cfg, const ferry_migration_params *p, const char *uri);
/*
 * The hostname alone, for connections to uri: p->tls_hostname, else uri's
 * host. A postcopy recovery reconnects with it to the resume URI, as QEMU
 * takes the name from each migrate command.
 */
void ferry__tls_cfg_host(ferry_tls_cfg *cfg, const ferry_migration_params *p, const char *uri);
/*
 * Whether cfg can work for a source (server false) or a destination with
 * parameters p: the creds' endpoint, no x-send-splice, a hostname to
 * check. 0 or -EINVAL with a message.
 */
int ferry__tls_cfg_check(const ferry_tls_cfg *cfg, const ferry_migration_params *p, bool server,
			 ferry_error *err);
void ferry__tls_cfg_drop(ferry_tls_cfg *cfg);

/*
 * Handshake on connected socket fd, as the server or the client of
 * cfg's creds; peer names the other side in messages ("source"). On
 * success *out is the session (fd stays the caller's).
 */
int ferry__tls_open(const ferry_tls_cfg *cfg, int fd, const char *peer, ferry_tls **out,
		    ferry_error *err);
void ferry__tls_close(ferry_tls *t);
/* Like recv(2): > 0 bytes, 0 at the end, -1 with errno (EPROTO: ferry__tls_error()). */
ssize_t ferry__tls_recv(ferry_tls *t, void *p, size_t n);
/* Like ferry__sock_send_all(): all of iov[0..cnt), consumed. 0 or a negative errno. */
int ferry__tls_send_all(ferry_tls *t, struct iovec *iov, int cnt, uint64_t *sent);
/* The last TLS failure of the session, for messages. */
const char *ferry__tls_error(const ferry_tls *t);

#endif
