/* SPDX-License-Identifier: MIT */
/*
 * TLS for migration connections: credentials and an authorization list,
 * configured the way QEMU's QMP does it (objects tls-creds-x509,
 * tls-creds-psk and authz-simple; migration parameters tls-creds, tls-hostname, tls-authz).
 *
 * With tls_creds set in a migration's parameters (ferry/migration.h), every
 * connection of the migration (the main one and its return path, each
 * multifd channel, the postcopy preempt channel, the connections of a
 * postcopy recovery) starts with a TLS 1.3 handshake, and nothing of the
 * guest travels before both sides accepted each other: the server (the
 * destination) tells the client it accepted only after its own checks, and
 * the client sends nothing before it heard so. The record layer is
 * GnuTLS's, in user space (docs/architecture.md, "TLS").
 *
 * X.509 credentials come from a directory with QEMU's file names:
 * ca-cert.pem (always), server-cert.pem and server-key.pem (a server
 * endpoint: the destination), client-cert.pem and client-key.pem (a
 * client endpoint: the source; optional, a client without them presents no
 * certificate). verify_peer: a server requires and verifies the client's
 * certificate; a client verifies the server's against the CA and the
 * hostname (tls-hostname, else the URI's host). An authz list names the
 * peer distinguished names allowed ("CN=src,O=Ferry", as GnuTLS prints
 * them: gnutls_x509_crt_get_dn2); the side that has one refuses any other.
 *
 * PSK credentials (tls-creds-psk) come from dir/keys.psk, lines
 * "username:hexkey" as psktool writes them: a server accepts any username
 * of the file with its key (GnuTLS reads the file at each handshake); a
 * client takes its username's key (username NULL: "qemu", QEMU's default)
 * when the credentials are made. Both sides prove the key in the
 * handshake (TLS 1.3 psk_dhe_ke: an ECDHE or DHE exchange too, for
 * forward secrecy); no certificate and no hostname are involved. An authz
 * list on a server names the PSK usernames allowed (QEMU's rule); a client
 * with PSK credentials cannot have one.
 *
 * Objects are reference counted: a migration takes its own references when
 * it starts, so a control plane may drop its own at any time.
 * Thread: any; the objects are immutable after creation.
 */
#ifndef FERRY_TLS_H
#define FERRY_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "ferry/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ferry_tls_creds ferry_tls_creds;
typedef struct ferry_tls_authz ferry_tls_authz;

typedef enum ferry_tls_endpoint {
	FERRY_TLS_ENDPOINT_CLIENT = 0, /* QEMU's "client": the source */
	FERRY_TLS_ENDPOINT_SERVER = 1, /* QEMU's "server": the destination */
} ferry_tls_endpoint;

/*
 * Loads X.509 credentials from dir. Returns 0 and *out (one reference), or
 * a negative errno with a message in err ("cannot load
 * /d/server-cert.pem: Error while reading file.").
 */
FERRY_EXTERN int ferry_tls_creds_new_x509(const char *dir, ferry_tls_endpoint endpoint,
					  bool verify_peer, ferry_tls_creds **out, char *err,
					  size_t err_len);
/*
 * Loads PSK credentials from dir/keys.psk (a client: username's key, NULL:
 * "qemu"). Returns 0 and *out (one reference), or a negative errno with a
 * message in err ("no key for username 'src' in /d/keys.psk").
 */
FERRY_EXTERN int ferry_tls_creds_new_psk(const char *dir, ferry_tls_endpoint endpoint,
					 const char *username, ferry_tls_creds **out, char *err,
					 size_t err_len);
FERRY_EXTERN ferry_tls_creds *ferry_tls_creds_ref(ferry_tls_creds *c);
/* Drops a reference; NULL is fine. */
FERRY_EXTERN void ferry_tls_creds_unref(ferry_tls_creds *c);
FERRY_EXTERN ferry_tls_endpoint ferry_tls_creds_endpoint(const ferry_tls_creds *c);

/* An authz list of n distinguished names (copied). 0 or -ENOMEM/-EINVAL. */
FERRY_EXTERN int ferry_tls_authz_new(const char *const *dns, size_t n, ferry_tls_authz **out);
FERRY_EXTERN ferry_tls_authz *ferry_tls_authz_ref(ferry_tls_authz *a);
FERRY_EXTERN void ferry_tls_authz_unref(ferry_tls_authz *a);
/* Whether dn is in the list. */
FERRY_EXTERN bool ferry_tls_authz_allows(const ferry_tls_authz *a, const char *dn);

#ifdef __cplusplus
}
#endif

#endif /* FERRY_TLS_H */
