/* SPDX-License-Identifier: MIT */
/*
 * TLS for migration connections, on GnuTLS (see tls.h and ferry/tls.h for
 * the design; docs/architecture.md, "TLS", for why GnuTLS).
 *
 * Everything that touches GnuTLS is here: credentials (x509 and PSK),
 * authz lists, the handshake and its checks, and the record I/O the
 * channels use. No crypto and no certificate parsing of our own: GnuTLS
 * verifies the chain, the dates and the hostname
 * (gnutls_session_set_verify_cert) and prints the distinguished name the
 * authz list is matched against; with PSK it reads the server's keys.psk
 * and decodes the client's hex key, proves the key in the handshake and
 * names the client's username. Ours is only finding the client's line.
 */
#include "transport/tls.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "transport/transport.h"

#define TLS_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3"
/* PSK with an (EC)DHE exchange only (TLS 1.3's psk_dhe_ke): forward secrecy, as with x509. */
#define TLS_PRIORITY_PSK TLS_PRIORITY ":+ECDHE-PSK:+DHE-PSK"
#define PSK_FILE "keys.psk"
#define PSK_USERNAME_MAX 255
#define PSK_HEX_MAX 1024 /* psktool's largest key, 512 bytes */
#define TLS_HANDSHAKE_MS 10000
#define TLS_ACCEPTED 0x01 /* the server's one byte: "you may send" */

struct ferry_tls_creds {
	atomic_int refs;
	ferry_tls_endpoint endpoint;
	bool verify_peer;
	gnutls_certificate_credentials_t x509; /* tls-creds-x509, or NULL */
	/* tls-creds-psk: one of the two (by endpoint); the server also names its file in messages */
	gnutls_psk_client_credentials_t psk_client;
	gnutls_psk_server_credentials_t psk_server;
	char psk_file[4096];
};

struct ferry_tls_authz {
	atomic_int refs;
	size_t n;
	char **dns;
};

struct ferry_tls {
	gnutls_session_t s;
	char err[160]; /* the last failure (reader or writer: either may set it) */
};

/* ---- credentials ---- */

static int creds_load(ferry_tls_creds *c, const char *dir, char *err, size_t len)
{
	static const char *const names[2][2] = { { "client-cert.pem", "client-key.pem" },
						 { "server-cert.pem", "server-key.pem" } };
	char ca[4096], cert[4096], key[4096];
	snprintf(ca, sizeof(ca), "%s/ca-cert.pem", dir);
	snprintf(cert, sizeof(cert), "%s/%s", dir, names[c->endpoint][0]);
	snprintf(key, sizeof(key), "%s/%s", dir, names[c->endpoint][1]);
	int r = gnutls_certificate_set_x509_trust_file(c->x509, ca, GNUTLS_X509_FMT_PEM);
	if (r <= 0) {
		snprintf(err, len, "cannot load %s: %s", ca, r ? gnutls_strerror(r) : "no certificate");
		return -EINVAL;
	}
	bool optional = c->endpoint == FERRY_TLS_ENDPOINT_CLIENT;
	if (optional && access(cert, F_OK) && access(key, F_OK))
		return 0; /* a client without a certificate of its own */
	r = gnutls_certificate_set_x509_key_file(c->x509, cert, key, GNUTLS_X509_FMT_PEM);
	if (r < 0) {
		snprintf(err, len, "cannot load %s and %s: %s", cert, key, gnutls_strerror(r));
		return -EINVAL;
	}
	return 0;
}

int ferry_tls_creds_new_x509(const char *dir, ferry_tls_endpoint endpoint, bool verify_peer,
			     ferry_tls_creds **out, char *err, size_t err_len)
{
	char dummy[1];
	if (!err || !err_len) {
		err = dummy;
		err_len = sizeof(dummy);
	}
	if (!dir || !*dir || !out ||
	    (endpoint != FERRY_TLS_ENDPOINT_CLIENT && endpoint != FERRY_TLS_ENDPOINT_SERVER)) {
		snprintf(err, err_len, "tls-creds-x509 needs a directory and an endpoint");
		return -EINVAL;
	}
	ferry_tls_creds *c = calloc(1, sizeof(*c));
	if (!c || gnutls_certificate_allocate_credentials(&c->x509) < 0) {
		free(c);
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	atomic_init(&c->refs, 1);
	c->endpoint = endpoint;
	c->verify_peer = verify_peer;
	int r = creds_load(c, dir, err, err_len);
	if (r) {
		ferry_tls_creds_unref(c);
		return r;
	}
	*out = c;
	return 0;
}

/*
 * The hex key of username in file (QEMU's and psktool's keys.psk: lines
 * "username:hexkey") into key; 0, -ENOENT (no such username) or another
 * negative errno, with a message in err.
 */
static int psk_lookup(const char *file, const char *username, char *key, size_t key_len, char *err,
		      size_t len)
{
	FILE *f = fopen(file, "re");
	if (!f) {
		int e = errno;
		snprintf(err, len, "cannot read %s: %s", file, strerror(e));
		return -e;
	}
	char *line = NULL;
	size_t cap = 0, ul = strlen(username);
	int r = -ENOENT;
	while (r == -ENOENT && getline(&line, &cap, f) > 0) {
		if (strncmp(line, username, ul) || line[ul] != ':')
			continue;
		char *hex = line + ul + 1;
		hex[strcspn(hex, "\r\n")] = 0;
		r = strlen(hex) < key_len ? 0 : -EINVAL;
		snprintf(key, key_len, "%s", r ? "" : hex);
	}
	if (line)
		explicit_bzero(line, cap); /* the keys: not left in freed memory */
	free(line);
	fclose(f);
	if (r == -ENOENT)
		snprintf(err, len, "no key for username '%s' in %s", username, file);
	else if (r)
		snprintf(err, len, "the key of '%s' in %s is too long", username, file);
	return r;
}

static int psk_load(ferry_tls_creds *c, const char *dir, const char *username, char *err, size_t len)
{
	snprintf(c->psk_file, sizeof(c->psk_file), "%s/" PSK_FILE, dir);
	if (c->endpoint == FERRY_TLS_ENDPOINT_SERVER) {
		/* GnuTLS reads the file at each handshake: check it is there now, as QEMU does. */
		if (access(c->psk_file, R_OK)) {
			snprintf(err, len, "cannot read %s: %s", c->psk_file, strerror(errno));
			return -EINVAL;
		}
		int r = gnutls_psk_set_server_credentials_file(c->psk_server, c->psk_file);
		if (r < 0)
			snprintf(err, len, "cannot load %s: %s", c->psk_file, gnutls_strerror(r));
		return r < 0 ? -EINVAL : 0;
	}
	char hex[PSK_HEX_MAX + 1];
	int r = psk_lookup(c->psk_file, username, hex, sizeof(hex), err, len);
	if (!r) {
		gnutls_datum_t key = { (unsigned char *)hex, (unsigned)strlen(hex) };
		r = gnutls_psk_set_client_credentials(c->psk_client, username, &key, GNUTLS_PSK_KEY_HEX);
		if (r < 0)
			snprintf(err, len, "bad key for username '%s' in %s: %s", username, c->psk_file,
				 gnutls_strerror(r));
	}
	explicit_bzero(hex, sizeof(hex));
	return r < 0 ? -EINVAL : 0;
}

int ferry_tls_creds_new_psk(const char *dir, ferry_tls_endpoint endpoint, const char *username,
			    ferry_tls_creds **out, char *err, size_t err_len)
{
	char dummy[1];
	if (!err || !err_len) {
		err = dummy;
		err_len = sizeof(dummy);
	}
	if (!username)
		username = "qemu"; /* QEMU's default */
	if (!dir || !*dir || !out || !*username || strlen(username) > PSK_USERNAME_MAX ||
	    strchr(username, ':') ||
	    (endpoint != FERRY_TLS_ENDPOINT_CLIENT && endpoint != FERRY_TLS_ENDPOINT_SERVER)) {
		snprintf(err, err_len, "tls-creds-psk needs a directory, an endpoint and a username "
				       "of 1 to %d bytes without ':'", PSK_USERNAME_MAX);
		return -EINVAL;
	}
	ferry_tls_creds *c = calloc(1, sizeof(*c));
	bool server = endpoint == FERRY_TLS_ENDPOINT_SERVER;
	if (!c || (server ? gnutls_psk_allocate_server_credentials(&c->psk_server)
			  : gnutls_psk_allocate_client_credentials(&c->psk_client)) < 0) {
		free(c);
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	atomic_init(&c->refs, 1);
	c->endpoint = endpoint;
	int r = psk_load(c, dir, username, err, err_len);
	if (r) {
		ferry_tls_creds_unref(c);
		return r;
	}
	*out = c;
	return 0;
}

ferry_tls_creds *ferry_tls_creds_ref(ferry_tls_creds *c)
{
	if (c)
		atomic_fetch_add(&c->refs, 1);
	return c;
}

void ferry_tls_creds_unref(ferry_tls_creds *c)
{
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	if (c->x509)
		gnutls_certificate_free_credentials(c->x509);
	if (c->psk_client)
		gnutls_psk_free_client_credentials(c->psk_client);
	if (c->psk_server)
		gnutls_psk_free_server_credentials(c->psk_server);
	free(c);
}

ferry_tls_endpoint ferry_tls_creds_endpoint(const ferry_tls_creds *c)
{
	return c->endpoint;
}

/* ---- authz ---- */

int ferry_tls_authz_new(const char *const *dns, size_t n, ferry_tls_authz **out)
{
	if (!out || (n && !dns))
		return -EINVAL;
	ferry_tls_authz *a = calloc(1, sizeof(*a));
	if (!a || (n && !(a->dns = calloc(n, sizeof(char *))))) {
		free(a);
		return -ENOMEM;
	}
	atomic_init(&a->refs, 1);
	for (; a->n < n; a->n++) {
		if (!dns[a->n] || !(a->dns[a->n] = strdup(dns[a->n]))) {
			int r = dns[a->n] ? -ENOMEM : -EINVAL;
			ferry_tls_authz_unref(a);
			return r;
		}
	}
	*out = a;
	return 0;
}

ferry_tls_authz *ferry_tls_authz_ref(ferry_tls_authz *a)
{
	if (a)
		atomic_fetch_add(&a->refs, 1);
	return a;
}

void ferry_tls_authz_unref(ferry_tls_authz *a)
{
	if (!a || atomic_fetch_sub(&a->refs, 1) != 1)
		return;
	for (size_t i = 0; i < a->n; i++)
		free(a->dns[i]);
	free(a->dns);
	free(a);
}

bool ferry_tls_authz_allows(const ferry_tls_authz *a, const char *dn)
{
	for (size_t i = 0; a && dn && i < a->n; i++)
		if (!strcmp(a->dns[i], dn))
			return true;
	return false;
}

/* ---- a migration's configuration ---- */

void ferry__tls_cfg_take(ferry_tls_cfg *cfg, const ferry_migration_params *p, const char *uri)
{
	memset(cfg, 0, sizeof(*cfg));
	if (!p->tls_creds)
		return;
	cfg->creds = ferry_tls_creds_ref(p->tls_creds);
	cfg->authz = ferry_tls_authz_ref(p->tls_authz);
	ferry__tls_cfg_host(cfg, p, uri);
}

void ferry__tls_cfg_host(ferry_tls_cfg *cfg, const ferry_migration_params *p, const char *uri)
{
	snprintf(cfg->hostname, sizeof(cfg->hostname), "%s", p->tls_hostname);
	if (!cfg->hostname[0] && uri && ferry__uri_host(uri, cfg->hostname, sizeof(cfg->hostname)))
		cfg->hostname[0] = 0;
}

int ferry__tls_cfg_check(const ferry_tls_cfg *cfg, const ferry_migration_params *p, bool server,
			 ferry_error *err)
{
	if (!cfg->creds)
		return 0;
	if (cfg->creds->endpoint != (server ? FERRY_TLS_ENDPOINT_SERVER : FERRY_TLS_ENDPOINT_CLIENT))
		return ferry__error_set(err, -EINVAL,
					"Expecting TLS credentials with a %s endpoint",
					server ? "server" : "client");
	if (!cfg->creds->x509 && cfg->authz && !server)
		return ferry__error_set(err, -EINVAL,
					"tls-authz with tls-creds-psk works on the destination only "
					"(it names the source's PSK username)");
	if (server)
		return 0;
	if (p->send_splice)
		return ferry__error_set(err, -EINVAL,
					"x-send-splice cannot be used with tls-creds: TLS encrypts in "
					"user space, pages cannot be spliced");
	if (!cfg->hostname[0] && cfg->creds->x509 && cfg->creds->verify_peer)
		return ferry__error_set(err, -EINVAL,
					"No hostname available for TLS: set tls-hostname (the URI has none)");
	return 0;
}

void ferry__tls_cfg_drop(ferry_tls_cfg *cfg)
{
	ferry_tls_creds_unref(cfg->creds);
	ferry_tls_authz_unref(cfg->authz);
	cfg->creds = NULL;
	cfg->authz = NULL;
}

/* ---- sessions ---- */

/* The certificate side of a session: what each endpoint requires of the other. */
static int session_x509(const ferry_tls_cfg *cfg, bool server, ferry_tls *t)
{
	int r = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, cfg->creds->x509);
	if (r < 0)
		return r;
	if (server && cfg->creds->verify_peer) {
		gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
		/* No CA list in the request: a client sends its certificate and hears why it is refused. */
		gnutls_certificate_send_x509_rdn_sequence(t->s, 1);
		gnutls_session_set_verify_cert(t->s, NULL, 0);
	} else if (!server) {
		if (cfg->hostname[0] && !strchr(cfg->hostname, ':') &&
		    (r = gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, cfg->hostname,
						strlen(cfg->hostname))) < 0)
			return r;
		if (cfg->creds->verify_peer)
			gnutls_session_set_verify_cert(t->s, cfg->hostname, 0);
	}
	return 0;
}

static int session_new(const ferry_tls_cfg *cfg, int fd, ferry_tls *t)
{
	const ferry_tls_creds *c = cfg->creds;
	bool server = c->endpoint == FERRY_TLS_ENDPOINT_SERVER;
	int r = gnutls_init(&t->s, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_SIGNAL);
	if (r < 0)
		return r;
	if ((r = gnutls_priority_set_direct(t->s, c->x509 ? TLS_PRIORITY : TLS_PRIORITY_PSK, NULL)) < 0)
		return r;
	/* PSK: the key authenticates both sides; no certificate, no hostname. */
	r = c->x509 ? session_x509(cfg, server, t)
		    : gnutls_credentials_set(t->s, GNUTLS_CRD_PSK,
					     server ? (void *)c->psk_server : (void *)c->psk_client);
	if (r < 0)
		return r;
	gnutls_transport_set_int(t->s, fd);
	gnutls_handshake_set_timeout(t->s, TLS_HANDSHAKE_MS);
	return 0;
}

/* Why the handshake failed, as the side that saw it. */
static int handshake_fail(ferry_tls *t, const ferry_tls_cfg *cfg, int r, const char *peer,
			  ferry_error *err)
{
	bool psk = !cfg->creds->x509;
	bool server = cfg->creds->endpoint == FERRY_TLS_ENDPOINT_SERVER;
	/*
	 * A wrong key and an unknown username look the same in TLS 1.3 (GnuTLS
	 * checks an unknown name against a random key): the binder fails.
	 */
	if (psk && server && r == GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER)
		return ferry__error_set(err, -EACCES,
					"TLS: the %s's pre-shared key does not match ours (a wrong key, "
					"or a username not in %s)", peer, cfg->creds->psk_file);
	if (psk && !server && r == GNUTLS_E_FATAL_ALERT_RECEIVED &&
	    gnutls_alert_get(t->s) == GNUTLS_A_ILLEGAL_PARAMETER)
		return ferry__error_set(err, -EACCES,
					"TLS: the %s refused our pre-shared key (a wrong key, or a "
					"username it does not know)", peer);
	if (r == GNUTLS_E_INSUFFICIENT_CREDENTIALS)
		return ferry__error_set(err, -EACCES,
					"TLS: the %s uses other credentials (tls-creds-%s here: both sides "
					"need the same kind)", peer, psk ? "psk" : "x509");
	if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
		gnutls_datum_t out = { 0 };
		unsigned st = gnutls_session_get_verify_cert_status(t->s);
		gnutls_certificate_verification_status_print(st, GNUTLS_CRT_X509, &out, 0);
		for (size_t n = out.data ? strlen((char *)out.data) : 0; n && out.data[n - 1] == ' ';)
			out.data[--n] = 0;
		ferry__error_set(err, -EACCES, "TLS: the %s's certificate was refused: %s", peer,
				 out.data ? (const char *)out.data : "verification failed");
		gnutls_free(out.data);
		return -EACCES;
	}
	if (r == GNUTLS_E_FATAL_ALERT_RECEIVED)
		return ferry__error_set(err, -EACCES, "TLS: the %s refused the connection: %s", peer,
					gnutls_alert_get_name(gnutls_alert_get(t->s)));
	if (r == GNUTLS_E_NO_CERTIFICATE_FOUND || r == GNUTLS_E_CERTIFICATE_REQUIRED)
		return ferry__error_set(err, -EACCES, "TLS: the %s presented no certificate", peer);
	if (r == GNUTLS_E_UNEXPECTED_PACKET_LENGTH || r == GNUTLS_E_UNSUPPORTED_VERSION_PACKET ||
	    r == GNUTLS_E_UNEXPECTED_PACKET)
		return ferry__error_set(err, -EPROTO,
					"TLS: the %s does not speak TLS (is tls-creds set there?): %s",
					peer, gnutls_strerror(r));
	if (r == GNUTLS_E_PREMATURE_TERMINATION || r == GNUTLS_E_PULL_ERROR || r == GNUTLS_E_PUSH_ERROR)
		return ferry__error_set(err, -EPROTO,
					"TLS: the %s closed the connection during the handshake "
					"(is tls-creds set there, and does it accept us?)", peer);
	return ferry__error_set(err, -EPROTO, "TLS handshake with the %s failed: %s", peer,
				gnutls_strerror(r));
}

/* The server's checks beyond the chain: the authz list (either side's, if it has one). */
static int check_authz(ferry_tls *t, const ferry_tls_cfg *cfg, const char *peer, ferry_error *err)
{
	if (!cfg->authz)
		return 0;
	if (!cfg->creds->x509) { /* PSK, on the server (cfg_check): the client's username, as QEMU */
		const char *user = gnutls_psk_server_get_username(t->s);
		if (ferry_tls_authz_allows(cfg->authz, user))
			return 0;
		return ferry__error_set(err, -EACCES, "TLS: the %s's PSK username '%.100s' is not allowed by tls-authz",
					peer, user ? user : "");
	}
	unsigned n = 0;
	const gnutls_datum_t *certs = gnutls_certificate_get_peers(t->s, &n);
	gnutls_x509_crt_t crt;
	gnutls_datum_t dn = { 0 };
	if (!certs || !n)
		return ferry__error_set(err, -EACCES,
					"TLS: the %s presented no certificate and tls-authz is set", peer);
	if (gnutls_x509_crt_init(&crt) < 0)
		return -ENOMEM;
	int r = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
	if (r >= 0)
		r = gnutls_x509_crt_get_dn2(crt, &dn);
	gnutls_x509_crt_deinit(crt);
	if (r < 0)
		return ferry__error_set(err, -EACCES, "TLS: cannot read the %s's certificate: %s", peer,
					gnutls_strerror(r));
	bool ok = ferry_tls_authz_allows(cfg->authz, (const char *)dn.data);
	if (!ok)
		ferry__error_set(err, -EACCES, "TLS: the %s's certificate '%.100s' is not allowed by tls-authz",
				 peer, (const char *)dn.data);
	gnutls_free(dn.data);
	return ok ? 0 : -EACCES;
}

static int handshake(ferry_tls *t, const ferry_tls_cfg *cfg, const char *peer, ferry_error *err)
{
	int r;
	do
		r = gnutls_handshake(t->s);
	while (r < 0 && !gnutls_error_is_fatal(r) && r != GNUTLS_E_AGAIN);
	if (r == GNUTLS_E_AGAIN)
		return ferry__error_set(err, -ETIMEDOUT, "TLS handshake with the %s timed out", peer);
	if (r < 0) {
		gnutls_alert_send_appropriate(t->s, r); /* so the peer's message says why */
		return handshake_fail(t, cfg, r, peer, err);
	}
	if ((r = check_authz(t, cfg, peer, err))) {
		gnutls_alert_send(t->s, GNUTLS_AL_FATAL, GNUTLS_A_ACCESS_DENIED);
		return r;
	}
	uint8_t b = TLS_ACCEPTED;
	if (cfg->creds->endpoint == FERRY_TLS_ENDPOINT_SERVER) {
		struct iovec iov = { &b, 1 };
		if ((r = ferry__tls_send_all(t, &iov, 1, NULL)))
			return ferry__error_set(err, r, "TLS: cannot accept the %s: %s", peer, t->err);
		return 0;
	}
	/* The client: nothing is sent before the server said it accepted us. */
	do
		r = (int)gnutls_record_recv(t->s, &b, 1);
	while (r == GNUTLS_E_INTERRUPTED);
	if (r == 1 && b == TLS_ACCEPTED)
		return 0;
	if (r >= 0)
		return ferry__error_set(err, -EPROTO, "TLS: the %s closed the connection", peer);
	return handshake_fail(t, cfg, r, peer, err);
}

int ferry__tls_open(const ferry_tls_cfg *cfg, int fd, const char *peer, ferry_tls **out,
		    ferry_error *err)
{
	ferry_tls *t = calloc(1, sizeof(*t));
	if (!t)
		return ferry__error_set(err, -ENOMEM, "out of memory");
	int r = session_new(cfg, fd, t);
	if (r < 0) {
		ferry__error_set(err, -EPROTO, "TLS setup failed: %s", gnutls_strerror(r));
		ferry__tls_close(t);
		return -EPROTO;
	}
	if ((r = handshake(t, cfg, peer, err))) {
		ferry__tls_close(t);
		return r;
	}
	*out = t;
	return 0;
}

void ferry__tls_close(ferry_tls *t)
{
	if (!t)
		return;
	if (t->s)
		gnutls_deinit(t->s);
	free(t);
}

const char *ferry__tls_error(const ferry_tls *t)
{
	return t->err[0] ? t->err : "TLS error";
}

/* A failed record call as an errno (and the message in t->err). */
static int record_errno(ferry_tls *t, ssize_t r)
{
	if (r == GNUTLS_E_AGAIN)
		return EAGAIN; /* SO_RCVTIMEO/SO_SNDTIMEO: the link timeout */
	if ((r == GNUTLS_E_PULL_ERROR || r == GNUTLS_E_PUSH_ERROR) && errno)
		return errno;
	if (r == GNUTLS_E_FATAL_ALERT_RECEIVED)
		snprintf(t->err, sizeof(t->err), "TLS alert from the peer: %s",
			 gnutls_alert_get_name(gnutls_alert_get(t->s)));
	else
		snprintf(t->err, sizeof(t->err), "TLS: %s", gnutls_strerror((int)r));
	return EPROTO;
}

ssize_t ferry__tls_recv(ferry_tls *t, void *p, size_t n)
{
	for (;;) {
		ssize_t r = gnutls_record_recv(t->s, p, n);
		if (r >= 0)
			return r;
		if (r == GNUTLS_E_INTERRUPTED)
			continue;
		if (r == GNUTLS_E_PREMATURE_TERMINATION)
			return 0; /* a close without close_notify: the stream says if it was early */
		errno = record_errno(t, r);
		return -1;
	}
}

/* Writes what the cork collected. */
static int uncork(ferry_tls *t)
{
	int r;
	do
		r = gnutls_record_uncork(t->s, GNUTLS_RECORD_WAIT);
	while (r == GNUTLS_E_INTERRUPTED);
	return r < 0 ? -record_errno(t, r) : 0;
}

int ferry__tls_send_all(ferry_tls *t, struct iovec *iov, int cnt, uint64_t *sent)
{
	/* Corked: the pieces go out as full 16 KiB records, not one record per iovec. */
	gnutls_record_cork(t->s);
	for (int i = 0; i < cnt; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t n = iov[i].iov_len;
		while (n) {
			ssize_t w = gnutls_record_send(t->s, p, n);
			if (w == GNUTLS_E_INTERRUPTED)
				continue;
			if (w < 0) {
				int e = -record_errno(t, w);
				(void)gnutls_record_uncork(t->s, 0);
				return e;
			}
			p += w;
			n -= (size_t)w;
			if (sent)
				*sent += (uint64_t)w;
		}
		iov[i].iov_len = 0;
	}
	return uncork(t);
}
