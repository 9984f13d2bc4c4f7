/* SPDX-License-Identifier: MIT */
/*
 * TLS objects and parameters, as QEMU's monitor has them: object-add of
 * qom-type tls-creds-x509 (id, dir, endpoint, verify-peer), tls-creds-psk
 * (id, dir, endpoint, verify-peer, username) and authz-simple (id,
 * identity), object-del, and the migration parameters
 * tls-creds, tls-hostname, tls-authz ("" when unset), which name the
 * objects a migration uses. The ids are resolved when a migration starts
 * (migrate, migrate-incoming), as QEMU does: libferry takes its own
 * references then (ferry/tls.h), so object-del never pulls credentials
 * from under a running migration.
 *
 * DESIGN: the objects live in a fixed table of HOST_OBJECTS slots (one
 * host per process, as host-fds.c's fd sets); a client is hostile: a full
 * table refuses object-add, ids and strings are bounded.
 *
 * Thread: loop thread only.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "host.h"

#define HOST_OBJECTS 32
#define OBJ_ID_MAX 127

typedef struct host_object {
	char id[OBJ_ID_MAX + 1];
	ferry_tls_creds *creds; /* tls-creds-x509 or tls-creds-psk, or NULL */
	ferry_tls_authz *authz; /* authz-simple, or NULL */
} host_object;

static host_object objects[HOST_OBJECTS];
/* migrate-set-parameters' tls-creds and tls-authz: ids, "" when unset. */
static char param_creds[OBJ_ID_MAX + 1], param_authz[OBJ_ID_MAX + 1];

static const char *const qom_types[] = { "tls-creds-x509", "tls-creds-psk", "authz-simple", NULL };
static const char *const endpoints[] = { "client", "server", NULL };
static const ferry_qmp_arg x509_members[] = {
	{ "dir", FERRY_QMP_STR, true },
	{ "endpoint", FERRY_QMP_ENUM, true, .values = endpoints },
	{ "verify-peer", FERRY_QMP_BOOL, true },
	{ NULL },
};
static const ferry_qmp_arg x509_t = { NULL, FERRY_QMP_OBJECT, .members = x509_members };
/* QEMU's TlsCredsPskProperties: verify-peer is accepted (a PSK always authenticates both sides). */
static const ferry_qmp_arg psk_members[] = {
	{ "dir", FERRY_QMP_STR, true },
	{ "endpoint", FERRY_QMP_ENUM, true, .values = endpoints },
	{ "verify-peer", FERRY_QMP_BOOL, true },
	{ "username", FERRY_QMP_STR, true },
	{ NULL },
};
static const ferry_qmp_arg psk_t = { NULL, FERRY_QMP_OBJECT, .members = psk_members };
static const ferry_qmp_arg authz_members[] = { { "identity", FERRY_QMP_STR }, { NULL } };
static const ferry_qmp_arg authz_t = { NULL, FERRY_QMP_OBJECT, .members = authz_members };
static const ferry_qmp_variant object_variants[] = {
	{ "tls-creds-x509", &x509_t },
	{ "tls-creds-psk", &psk_t },
	{ "authz-simple", &authz_t },
	{ NULL },
};
static const ferry_qmp_arg object_base[] = {
	{ "qom-type", FERRY_QMP_ENUM, .values = qom_types },
	{ "id", FERRY_QMP_STR },
	{ NULL },
};
/* QEMU's ObjectOptions, a union on qom-type (Ferry's: the three TLS types). */
const ferry_qmp_arg host_object_add_args_t = {
	NULL, FERRY_QMP_OBJECT, .members = object_base, .tag = "qom-type", .variants = object_variants,
};
const ferry_qmp_arg host_object_del_args[] = { { "id", FERRY_QMP_STR }, { NULL } };

static host_object *object_find(const char *id)
{
	for (int i = 0; i < HOST_OBJECTS; i++)
		if ((objects[i].creds || objects[i].authz) && !strcmp(objects[i].id, id))
			return &objects[i];
	return NULL;
}

static host_object *object_free_slot(void)
{
	for (int i = 0; i < HOST_OBJECTS; i++)
		if (!objects[i].creds && !objects[i].authz)
			return &objects[i];
	return NULL;
}

/* Makes o's object from args; 0 or an error in err. */
static int object_make(host_object *o, const char *type, json_t *args, char *err, size_t len)
{
	if (!strcmp(type, "authz-simple")) {
		const char *dn = json_string_value(json_object_get(args, "identity"));
		int r = ferry_tls_authz_new(&dn, 1, &o->authz);
		if (r)
			snprintf(err, len, "Cannot create authz-simple: %s", ferry_strerror(r));
		return r;
	}
	json_t *ep = json_object_get(args, "endpoint"), *vp = json_object_get(args, "verify-peer");
	const char *dir = json_string_value(json_object_get(args, "dir"));
	const char *user = json_string_value(json_object_get(args, "username"));
	bool server = ep && !strcmp(json_string_value(ep), "server"); /* QEMU's default: client */
	ferry_tls_endpoint e = server ? FERRY_TLS_ENDPOINT_SERVER : FERRY_TLS_ENDPOINT_CLIENT;
	char why[300];
	int r = !strcmp(type, "tls-creds-psk")
			? ferry_tls_creds_new_psk(dir ? dir : "", e, user, &o->creds, why, sizeof(why))
			: ferry_tls_creds_new_x509(dir ? dir : "", e, !vp || json_is_true(vp), &o->creds,
						   why, sizeof(why));
	if (r)
		snprintf(err, len, "Cannot load TLS credentials: %s", why);
	return r;
}

void host_cmd_object_add(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)opaque;
	const char *type = json_string_value(json_object_get(args, "qom-type"));
	const char *id = json_string_value(json_object_get(args, "id"));
	char err[400];
	host_object *o = NULL;
	if (!*id || strlen(id) > OBJ_ID_MAX)
		snprintf(err, sizeof(err), "Parameter 'id' expects an identifier of 1 to %d bytes",
			 OBJ_ID_MAX);
	else if (object_find(id))
		snprintf(err, sizeof(err), "attempt to add duplicate property '%s' to object (type 'container')",
			 id);
	else if (!(o = object_free_slot()))
		snprintf(err, sizeof(err), "Too many objects (at most %d)", HOST_OBJECTS);
	if (!o || object_make(o, type, args, err, sizeof(err))) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "%s", err);
		return;
	}
	snprintf(o->id, sizeof(o->id), "%s", id);
	ferry_qmp_req_return(req, NULL);
}

void host_cmd_object_del(void *opaque, ferry_qmp_req *req, json_t *args)
{
	(void)opaque;
	const char *id = json_string_value(json_object_get(args, "id"));
	host_object *o = object_find(id);
	if (!o) {
		ferry_qmp_req_error(req, FERRY_QMP_GENERIC, "object '%s' not found", id);
		return;
	}
	/* A migration that uses it holds its own reference. */
	ferry_tls_creds_unref(o->creds);
	ferry_tls_authz_unref(o->authz);
	memset(o, 0, sizeof(*o));
	ferry_qmp_req_return(req, NULL);
}

/* ---- the parameters ---- */

bool host_tls_params_check(ferry_qmp_req *req, json_t *args)
{
	static const char *const names[] = { "tls-creds", "tls-authz", "tls-hostname" };
	for (int i = 0; i < 3; i++) {
		json_t *v = json_object_get(args, names[i]);
		size_t max = i < 2 ? OBJ_ID_MAX : sizeof(((ferry_migration_params *)0)->tls_hostname) - 1;
		if (v && strlen(json_string_value(v)) > max) {
			ferry_qmp_req_error(req, FERRY_QMP_GENERIC,
					    "Parameter '%s' expects at most %zu bytes", names[i], max);
			return false;
		}
	}
	return true;
}

void host_tls_params_set(json_t *args, ferry_migration_params *p)
{
	json_t *v;
	if ((v = json_object_get(args, "tls-creds")))
		snprintf(param_creds, sizeof(param_creds), "%s", json_string_value(v));
	if ((v = json_object_get(args, "tls-authz")))
		snprintf(param_authz, sizeof(param_authz), "%s", json_string_value(v));
	if ((v = json_object_get(args, "tls-hostname")))
		snprintf(p->tls_hostname, sizeof(p->tls_hostname), "%s", json_string_value(v));
}

void host_tls_params_query(json_t *o, const ferry_migration_params *p)
{
	json_object_set_new(o, "tls-creds", json_string(param_creds));
	json_object_set_new(o, "tls-hostname", json_string(p->tls_hostname));
	json_object_set_new(o, "tls-authz", json_string(param_authz));
}

/* The object id names if it is of the kind wanted (creds or authz), else NULL and err says so. */
static host_object *object_of(const char *id, bool creds, char *err, size_t len)
{
	host_object *o = object_find(id);
	if (o && (creds ? !!o->creds : !!o->authz))
		return o;
	snprintf(err, len, creds ? "No TLS credentials with id '%s'"
				 : "Cannot find authorization object '%s'", id);
	return NULL;
}

int host_tls_resolve(ferry_migration_params *p, bool server, char *err, size_t len)
{
	p->tls_creds = NULL;
	p->tls_authz = NULL;
	host_object *o = NULL, *a = NULL;
	if (param_creds[0] && !(o = object_of(param_creds, true, err, len)))
		return -ENOENT;
	if (o && param_authz[0] && !(a = object_of(param_authz, false, err, len)))
		return -ENOENT;
	if (o && ferry_tls_creds_endpoint(o->creds) != (server ? FERRY_TLS_ENDPOINT_SERVER
								: FERRY_TLS_ENDPOINT_CLIENT)) {
		snprintf(err, len, "Expecting TLS credentials with a %s endpoint",
			 server ? "server" : "client");
		return -EINVAL;
	}
	p->tls_creds = o ? o->creds : NULL;
	p->tls_authz = a ? a->authz : NULL;
	return 0;
}

int host_tls_from_dir(const char *dir, bool psk, bool server, char *err, size_t len)
{
	host_object *o = object_free_slot();
	ferry_tls_endpoint e = server ? FERRY_TLS_ENDPOINT_SERVER : FERRY_TLS_ENDPOINT_CLIENT;
	int r = psk ? ferry_tls_creds_new_psk(dir, e, NULL, &o->creds, err, len)
		    : ferry_tls_creds_new_x509(dir, e, true, &o->creds, err, len);
	if (r)
		return r;
	snprintf(o->id, sizeof(o->id), "tls0");
	snprintf(param_creds, sizeof(param_creds), "tls0");
	return 0;
}
