/* SPDX-License-Identifier: MIT */
/*
 * TLS on migration connections (ferry/tls.h): bit-exact migrations over
 * TLS 1.3 with mutual authentication (precopy, multifd), and each refusal
 * with its message on both sides, nothing of the guest sent and the
 * source guest still running: a client without a certificate, a client
 * certificate from another CA, a hostname mismatch, an expired server
 * certificate, a DN that tls-authz does not allow, and a plaintext peer
 * on either side of a TLS one. Postcopy with preempt over TLS, paused and
 * recovered, bit-exact, and a recovery to another address of the
 * destination checked against that address, not the first one.
 *
 * The same over a pre-shared key (tls-creds-psk): precopy, multifd and
 * postcopy with preempt and recovery bit-exact, and the refusals: a wrong key, a username the destination
 * does not know, a username tls-authz does not allow, and PSK credentials
 * against an x509 peer.
 *
 * The certificates are made at run time with certtool (gnutls-bin) in a
 * fresh directory: ECDSA keys (fast to make), one CA for the good ones and
 * another for the stranger; the keys.psk files with psktool (random keys).
 * Skipped (77) without certtool or psktool.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "harness.h"

#define SPEC "mem=32M,vram=4M,vcpus=2,workload=random"
#define IDLE "mem=16M,vram=4M,vcpus=1,workload=idle"
#define CLIENT_DN "O=Ferry,CN=src" /* as GnuTLS prints it */

static char top[256]; /* the certificates' directory */

static void sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd)) {
		fprintf(stderr, "failed: %s\n", cmd);
		abort();
	}
}

/* A key and a certificate NAME signed by CA (NULL: self-signed CA) with template lines tmpl. */
static void make_cert(const char *name, const char *ca, const char *tmpl)
{
	sh("cd %s && printf '%s\\n' > %s.info && "
	   "certtool --generate-privkey --key-type=ecdsa --outfile %s-key.pem 2>/dev/null", top, tmpl,
	   name, name);
	if (!ca)
		sh("cd %s && certtool --generate-self-signed --load-privkey %s-key.pem --template %s.info "
		   "--outfile %s-cert.pem >/dev/null 2>&1", top, name, name, name);
	else
		sh("cd %s && certtool --generate-certificate --load-privkey %s-key.pem --load-ca-certificate "
		   "%s-cert.pem --load-ca-privkey %s-key.pem --template %s.info --outfile %s-cert.pem "
		   ">/dev/null 2>&1", top, name, ca, ca, name, name);
}

/* Directory DIR with QEMU's file names: ca-cert.pem from CA, ROLE-cert/key.pem from CERT. */
static void make_dir(const char *dir, const char *ca, const char *role, const char *cert)
{
	sh("cd %s && mkdir -p %s && cp %s-cert.pem %s/ca-cert.pem", top, dir, ca, dir);
	if (cert)
		sh("cd %s && cp %s-cert.pem %s/%s-cert.pem && cp %s-key.pem %s/%s-key.pem", top, cert, dir,
		   role, cert, dir, role);
}

static int setup(void **state)
{
	(void)state;
	if (system("certtool --version >/dev/null 2>&1"))
		return -1;
	snprintf(top, sizeof(top), "/tmp/ferry-tls-XXXXXX");
	if (!mkdtemp(top))
		return -1;
	make_cert("ca", NULL, "cn = Ferry Test CA\nca\ncert_signing_key\nexpiration_days = 2");
	make_cert("other", NULL, "cn = Other CA\nca\ncert_signing_key\nexpiration_days = 2");
	make_cert("server", "ca", "cn = localhost\norganization = Ferry\ndns_name = localhost\n"
				  "ip_address = 127.0.0.1\ntls_www_server\nsigning_key\nexpiration_days = 2");
	make_cert("client", "ca", "cn = src\norganization = Ferry\ntls_www_client\nsigning_key\n"
				  "expiration_days = 2");
	make_cert("stranger", "other", "cn = src\norganization = Ferry\ntls_www_client\nsigning_key\n"
				       "expiration_days = 2");
	make_cert("expired", "ca", "cn = localhost\ndns_name = localhost\ntls_www_server\nsigning_key\n"
				   "activation_date = \"2020-01-01 00:00:00 UTC\"\n"
				   "expiration_date = \"2020-02-01 00:00:00 UTC\"");
	make_dir("srv", "ca", "server", "server");
	make_dir("srv-expired", "ca", "server", "expired");
	make_dir("cli", "ca", "client", "client");
	make_dir("cli-nocert", "ca", "client", NULL);
	make_dir("cli-stranger", "ca", "client", "stranger");
	/* psk-srv knows src and dst; psk-cli has src's key, psk-wrong another key for src. */
	sh("cd %s && mkdir psk-srv psk-cli psk-wrong psk-unknown && "
	   "psktool -u src -p psk-srv/keys.psk >/dev/null && psktool -u dst -p psk-srv/keys.psk >/dev/null && "
	   "cp psk-srv/keys.psk psk-cli/ && psktool -u src -p psk-wrong/keys.psk >/dev/null && "
	   "psktool -u stranger -p psk-unknown/keys.psk >/dev/null", top);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (top[0])
		sh("rm -rf %s", top);
	return 0;
}

/* x509 credentials from dir, or PSK ones if psk_user is set ("" for QEMU's default username). */
static ferry_tls_creds *creds(const char *dir, ferry_tls_endpoint ep, const char *psk_user)
{
	char path[512], err[256] = "";
	snprintf(path, sizeof(path), "%s/%s", top, dir);
	ferry_tls_creds *c = NULL;
	int r = psk_user ? ferry_tls_creds_new_psk(path, ep, *psk_user ? psk_user : NULL, &c, err,
						   sizeof(err))
			 : ferry_tls_creds_new_x509(path, ep, true, &c, err, sizeof(err));
	if (r)
		fprintf(stderr, "creds %s: %s\n", dir, err);
	assert_int_equal(r, 0);
	return c;
}

/* One side's TLS setup: creds directory (NULL: plaintext), hostname, one authz DN, PSK username. */
struct tls_side {
	const char *dir;
	const char *hostname;
	const char *authz;
	const char *psk_user; /* NULL: x509 */
};

static void apply(ferry_migration_params *p, const struct tls_side *t, ferry_tls_endpoint ep)
{
	if (!t->dir)
		return;
	p->tls_creds = creds(t->dir, ep, t->psk_user);
	snprintf(p->tls_hostname, sizeof(p->tls_hostname), "%s", t->hostname ? t->hostname : "");
	if (t->authz)
		assert_int_equal(ferry_tls_authz_new(&t->authz, 1, &p->tls_authz), 0);
}

static void release(ferry_migration_params *p)
{
	ferry_tls_creds_unref(p->tls_creds);
	ferry_tls_authz_unref(p->tls_authz);
}

static const struct tls_side SRC_OK = { "cli", "localhost", NULL };
static const struct tls_side DST_OK = { "srv", NULL, CLIENT_DN };
static const struct tls_side PSK_SRC = { "psk-cli", NULL, NULL, "src" };
static const struct tls_side PSK_DST = { "psk-srv", NULL, NULL, "" };

/*
 * Migrates spec from a source set up as s to a destination set up as d,
 * with multifd over n channels (0: none). want_src/want_dst NULL: the
 * migration must complete bit-exact; else both must fail, their messages
 * containing these, with the source running and no page sent.
 */
static void run(const char *spec, const struct tls_side *s, const struct tls_side *d, unsigned n,
		const char *want_src, const char *want_dst)
{
	side src, dst;
	side_create(&src, spec, FERRY_DIRTY_WP_ASYNC, false);
	side_create(&dst, spec, FERRY_DIRTY_WP_ASYNC, true);
	ferry_migration_params sp, dp;
	ferry_migration_params_init(&sp);
	ferry_migration_params_init(&dp);
	sp.multifd = dp.multifd = n > 0;
	sp.multifd_channels = n ? n : 2;
	apply(&sp, s, FERRY_TLS_ENDPOINT_CLIENT);
	apply(&dp, d, FERRY_TLS_ENDPOINT_SERVER);
	assert_int_equal(ferry_migration_set_incoming_params(dst.vm, &dp), 0);
	const char *uri = test_uri();
	assert_int_equal(ferry_migration_incoming(dst.vm, uri), 0);
	release(&dp); /* the migration holds its own references */
	assert_int_equal(ferry_vm_start(src.vm), 0);
	assert_int_equal(ferry_migration_start(src.vm, uri, &sp), 0);
	release(&sp);
	if (!want_src) {
		assert_int_equal(wait_src_converge(src.vm, &sp, 5), FERRY_MIGRATION_COMPLETED);
		assert_int_equal(wait_final(dst.vm), FERRY_MIGRATION_COMPLETED);
		ferry_migration_info si, di;
		ferry_migration_query(src.vm, &si);
		ferry_migration_query(dst.vm, &di);
		assert_int_equal(si.normal, di.normal);
		assert_int_equal(si.verified_bytes, 0); /* the AEAD authenticates: no checksums */
		assert_true(side_run_and_verify(&dst, 2000));
	} else {
		const char *es = wait_failed(src.vm);
		fprintf(stderr, "source: %s\n", es);
		assert_non_null(strstr(es, want_src));
		const char *ed = wait_failed(dst.vm);
		fprintf(stderr, "destination: %s\n", ed);
		assert_non_null(strstr(ed, want_dst));
		ferry_migration_info si, di;
		ferry_migration_query(src.vm, &si);
		ferry_migration_query(dst.vm, &di);
		if (s->dir) /* a plaintext source sends before it hears anything */
			assert_int_equal(si.normal, 0); /* nothing of the guest sent */
		assert_int_equal(di.normal, 0);   /* nor taken */
		assert_true(ferry_vm_is_running(src.vm));
	}
	side_destroy(&src);
	side_destroy(&dst);
}

static void t_precopy(void **s) { (void)s; run(SPEC, &SRC_OK, &DST_OK, 0, NULL, NULL); }
static void t_multifd(void **s) { (void)s; run(SPEC, &SRC_OK, &DST_OK, 2, NULL, NULL); }

static void t_no_client_cert(void **s)
{
	(void)s;
	struct tls_side c = { "cli-nocert", "localhost", NULL };
	run(IDLE, &c, &DST_OK, 0, "TLS: the destination refused the connection", "presented no certificate");
}

static void t_other_ca(void **s)
{
	(void)s;
	struct tls_side c = { "cli-stranger", "localhost", NULL };
	run(IDLE, &c, &DST_OK, 0, "TLS: the destination refused the connection",
	    "the source's certificate was refused: The certificate is NOT trusted. The certificate issuer is unknown.");
}

static void t_hostname(void **s)
{
	(void)s;
	struct tls_side c = { "cli", "wrong.example", NULL };
	run(IDLE, &c, &DST_OK, 0, "The name in the certificate does not match the expected.",
	    "the source refused the connection: Certificate is bad");
}

static void t_expired(void **s)
{
	(void)s;
	struct tls_side d = { "srv-expired", NULL, NULL };
	run(IDLE, &SRC_OK, &d, 0, "The certificate chain uses expired certificate.",
	    "the source refused the connection: Certificate is bad");
}

static void t_authz(void **s)
{
	(void)s;
	struct tls_side d = { "srv", NULL, "CN=someone-else,O=Ferry" };
	run(IDLE, &SRC_OK, &d, 0, "refused the connection: Access was denied",
	    "the source's certificate '" CLIENT_DN "' is not allowed by tls-authz");
}

static void t_plain_to_tls(void **s)
{
	(void)s;
	struct tls_side plain = { NULL, NULL, NULL };
	run(IDLE, &plain, &DST_OK, 0, "destination", "does not speak TLS");
}

static void t_tls_to_plain(void **s)
{
	(void)s;
	struct tls_side plain = { NULL, NULL, NULL };
	run(IDLE, &SRC_OK, &plain, 0, "the destination does not speak TLS",
	    "the source speaks TLS but tls-creds is not set here");
}

/* ---- PSK ---- */

static void t_psk_precopy(void **s) { (void)s; run(SPEC, &PSK_SRC, &PSK_DST, 0, NULL, NULL); }
static void t_psk_multifd(void **s) { (void)s; run(SPEC, &PSK_SRC, &PSK_DST, 2, NULL, NULL); }

static void t_psk_authz(void **s)
{
	(void)s;
	struct tls_side ok = { "psk-srv", NULL, "src", "" };
	run(IDLE, &PSK_SRC, &ok, 0, NULL, NULL);
	struct tls_side d = { "psk-srv", NULL, "dst", "" };
	run(IDLE, &PSK_SRC, &d, 0, "refused the connection: Access was denied",
	    "the source's PSK username 'src' is not allowed by tls-authz");
}

static void t_psk_wrong_key(void **s)
{
	(void)s;
	struct tls_side c = { "psk-wrong", NULL, NULL, "src" };
	run(IDLE, &c, &PSK_DST, 0, "TLS: the destination refused our pre-shared key",
	    "the source's pre-shared key does not match ours");
}

static void t_psk_unknown_user(void **s)
{
	(void)s;
	struct tls_side c = { "psk-unknown", NULL, NULL, "stranger" };
	run(IDLE, &c, &PSK_DST, 0, "TLS: the destination refused our pre-shared key",
	    "the source's pre-shared key does not match ours");
}

static void t_psk_vs_x509(void **s)
{
	(void)s;
	run(IDLE, &PSK_SRC, &DST_OK, 0, "TLS: the destination uses other credentials (tls-creds-psk here",
	    "TLS: the source refused the connection: Handshake failed");
	/* The source hears the alert, or the close if the destination was quicker. */
	run(IDLE, &SRC_OK, &PSK_DST, 0, "TLS: the destination",
	    "TLS: the source uses other credentials (tls-creds-psk here");
}

/* Loading: a missing file, a username the file lacks, QEMU's default username. */
static void t_psk_load(void **s)
{
	(void)s;
	ferry_tls_creds *c = NULL;
	char err[256], path[512];
	assert_int_equal(ferry_tls_creds_new_psk("/nonexistent", FERRY_TLS_ENDPOINT_SERVER, NULL, &c,
						 err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "cannot read /nonexistent/keys.psk"));
	snprintf(path, sizeof(path), "%s/psk-cli", top);
	assert_int_equal(ferry_tls_creds_new_psk(path, FERRY_TLS_ENDPOINT_CLIENT, NULL, &c, err,
						 sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "no key for username 'qemu'"));
	assert_int_equal(ferry_tls_creds_new_psk(path, FERRY_TLS_ENDPOINT_CLIENT, "a:b", &c, err,
						 sizeof(err)), -EINVAL);
	sh("cd %s && psktool -u qemu -p psk-cli/keys.psk >/dev/null", top);
	assert_int_equal(ferry_tls_creds_new_psk(path, FERRY_TLS_ENDPOINT_CLIENT, NULL, &c, err,
						 sizeof(err)), 0);
	ferry_tls_creds_unref(c);
}

/*
 * Postcopy with preempt over TLS, paused and recovered: the preempt
 * channel and the recovery reconnect are TLS too (a plaintext one would
 * fail the handshake), and the result is bit-exact.
 */
#define PC_SPEC "mem=128M,vram=4M,vcpus=2,rate=max,workload=random"

/*
 * Starts a postcopy migration with preempt from a source set up as ts to
 * a destination set up as td listening on uri, and pauses it by hand once
 * postcopy is active. 0: both sides paused; -ENOENT: postcopy was already
 * over (it then completes on its own).
 */
static int pc_start_paused(side *src, side *dst, const struct tls_side *ts,
			   const struct tls_side *td, const char *uri)
{
	side_create(src, PC_SPEC, FERRY_DIRTY_WP_ASYNC, false);
	side_create(dst, PC_SPEC, FERRY_DIRTY_WP_ASYNC, true);
	ferry_migration_params sp, dp;
	ferry_migration_params_init(&sp);
	ferry_migration_params_init(&dp);
	dp.postcopy = sp.postcopy = sp.postcopy_preempt = true;
	sp.postcopy_after_passes = 1;
	sp.downtime_limit_ms = 1; /* never converge: always switch */
	apply(&sp, ts, FERRY_TLS_ENDPOINT_CLIENT);
	apply(&dp, td, FERRY_TLS_ENDPOINT_SERVER);
	assert_int_equal(ferry_migration_set_incoming_params(dst->vm, &dp), 0);
	release(&dp);
	assert_int_equal(ferry_migration_incoming(dst->vm, uri), 0);
	assert_int_equal(ferry_vm_start(src->vm), 0);
	side_wait_steps(src, 1024);
	assert_int_equal(ferry_migration_start(src->vm, uri, &sp), 0);
	release(&sp);
	wait_status(src->vm, FERRY_MIGRATION_POSTCOPY_ACTIVE);
	int r = ferry_migration_pause(src->vm);
	if (r == -ENOENT)
		return r;
	assert_int_equal(r, 0);
	wait_status(src->vm, FERRY_MIGRATION_POSTCOPY_PAUSED);
	wait_status(dst->vm, FERRY_MIGRATION_POSTCOPY_PAUSED);
	return 0;
}

/* Resumes src to uri as soon as it takes it (it may still be failing a resume). */
static void pc_resume(side *src, const char *uri)
{
	int r;
	for (int i = 0; i < 10000 && (r = ferry_migration_resume(src->vm, uri)) == -ENOENT; i++)
		msleep(1);
	assert_int_equal(r, 0);
}

/* Both sides COMPLETED in postcopy after `recoveries` recoveries, bit-exact; destroys them. */
static void pc_finish(side *src, side *dst, uint32_t recoveries)
{
	assert_int_equal(wait_final(src->vm), FERRY_MIGRATION_COMPLETED);
	assert_int_equal(wait_final(dst->vm), FERRY_MIGRATION_COMPLETED);
	ferry_migration_info si;
	ferry_migration_query(src->vm, &si);
	assert_true(si.postcopy);
	assert_int_equal(si.postcopy_recoveries, recoveries);
	assert_true(side_run_and_verify(dst, 3000));
	side_destroy(src);
	side_destroy(dst);
}

static void postcopy_preempt_recover(const struct tls_side *ts, const struct tls_side *td)
{
	side src, dst;
	int r = pc_start_paused(&src, &dst, ts, td, test_uri());
	if (!r) {
		const char *uri = test_uri();
		assert_int_equal(ferry_migration_recover(dst.vm, uri), 0);
		pc_resume(&src, uri);
	}
	pc_finish(&src, &dst, r ? 0 : 1);
}

static void t_postcopy_preempt_recover(void **s)
{
	(void)s;
	postcopy_preempt_recover(&SRC_OK, &DST_OK);
}

/* Postcopy's preempt channel and recovery connections over PSK too. */
static void t_psk_postcopy(void **s)
{
	(void)s;
	postcopy_preempt_recover(&PSK_SRC, &PSK_DST);
}

/*
 * A recovery checks the destination's certificate against the host of the
 * URI it reconnects to, as the first connection did (QEMU takes the name
 * from each migrate command), not against the first URI's: tls-hostname
 * unset, the migration goes to tcp:127.0.0.1 (an address the certificate
 * names). The first resume, to tcp:127.0.0.2 (the same destination, an
 * address the certificate does not name), must fail, so the destination
 * pauses again and takes a new listener; it recovered before the fix. The
 * second, to tcp:localhost (the certificate's DNS name), completes
 * bit-exact, preempt channel included.
 */
static void t_recover_hostname(void **s)
{
	(void)s;
	const struct tls_side by_uri = { "cli", NULL, NULL };
	side src, dst;
	char uri[64], any[64], wrong[64], right[64];
	snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%u", free_port());
	if (pc_start_paused(&src, &dst, &by_uri, &DST_OK, uri)) {
		fprintf(stderr, "postcopy ended before the pause; not tested\n");
		pc_finish(&src, &dst, 0);
		return;
	}
	unsigned port = free_port();
	snprintf(any, sizeof(any), "tcp:0.0.0.0:%u", port);
	snprintf(wrong, sizeof(wrong), "tcp:127.0.0.2:%u", port);
	assert_int_equal(ferry_migration_recover(dst.vm, any), 0);
	assert_int_equal(ferry_migration_resume(src.vm, wrong), 0);
	/* Refused: the destination is paused again, without a listener. */
	port = free_port();
	snprintf(any, sizeof(any), "tcp:0.0.0.0:%u", port);
	snprintf(right, sizeof(right), "tcp:localhost:%u", port);
	int r;
	for (int i = 0; (r = ferry_migration_recover(dst.vm, any)) == -ENOENT; i++) {
		ferry_migration_info di;
		ferry_migration_query(dst.vm, &di);
		if (i == 10000)
			fail_msg("the resume to %s was not refused: %s", wrong,
				 ferry_migration_status_name(di.status));
		msleep(1);
	}
	assert_int_equal(r, 0);
	expect_pause_reason(&dst, "postcopy recovery failed: TLS: the source refused the connection");
	expect_pause_reason(&src, "postcopy resume failed: TLS: the destination's certificate was refused");
	ferry_migration_info si;
	ferry_migration_query(src.vm, &si);
	assert_non_null(strstr(si.error_desc, "The name in the certificate does not match"));
	pc_resume(&src, right);
	pc_finish(&src, &dst, 1);
}

/* x-send-splice cannot work under TLS: refused at the start, with the reason. */
static void t_splice_refused(void **s)
{
	(void)s;
	side src;
	side_create(&src, IDLE, FERRY_DIRTY_WP_ASYNC, false);
	ferry_migration_params p;
	ferry_migration_params_init(&p);
	p.send_splice = true;
	p.tls_creds = creds("cli", FERRY_TLS_ENDPOINT_CLIENT, NULL);
	assert_int_equal(ferry_vm_start(src.vm), 0);
	assert_int_equal(ferry_migration_start(src.vm, test_uri(), &p), 0);
	release(&p);
	assert_non_null(strstr(wait_failed(src.vm), "x-send-splice cannot be used with tls-creds"));
	assert_true(ferry_vm_is_running(src.vm));
	side_destroy(&src);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_precopy),
		cmocka_unit_test(t_multifd),
		cmocka_unit_test(t_no_client_cert),
		cmocka_unit_test(t_other_ca),
		cmocka_unit_test(t_hostname),
		cmocka_unit_test(t_expired),
		cmocka_unit_test(t_authz),
		cmocka_unit_test(t_plain_to_tls),
		cmocka_unit_test(t_tls_to_plain),
		cmocka_unit_test(t_splice_refused),
		cmocka_unit_test(t_postcopy_preempt_recover),
		cmocka_unit_test(t_recover_hostname),
		cmocka_unit_test(t_psk_precopy),
		cmocka_unit_test(t_psk_multifd),
		cmocka_unit_test(t_psk_authz),
		cmocka_unit_test(t_psk_wrong_key),
		cmocka_unit_test(t_psk_unknown_user),
		cmocka_unit_test(t_psk_vs_x509),
		cmocka_unit_test(t_psk_postcopy),
		cmocka_unit_test(t_psk_load),
	};
	if (system("certtool --version >/dev/null 2>&1 && psktool --version >/dev/null 2>&1"))
		return 77;
	if (getenv("FERRY_TEST_FILTER")) /* e.g. t_recover_hostname, or t_psk_* */
		cmocka_set_test_filter(getenv("FERRY_TEST_FILTER"));
	return cmocka_run_group_tests(tests, setup, teardown);
}
