/* jwt_auth.c -- verifying a JWT into a Herald user.
 *
 * The token is checked in this order, each step refusing with its own result:
 * shape (three base64url parts, bounded length), header JSON and its "alg"
 * against the pinned algorithm, the signature (libjwt's jwt_decode, given our
 * key), then the claims (exp, nbf, iss, aud, subject). The header and payload
 * are decoded here so that a token naming another algorithm never reaches
 * libjwt with our key, and so that claim types are checked with jansson rather
 * than libjwt's string/int getters. */
#include "jwt_auth.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#define JWT_AUTH_MAX_KEY_FILE (1024 * 1024) /* a PEM public key is a few KB at most */

static const struct {
    const char *name;
    jwt_alg_t alg;
    const char *curve; /* OpenSSL group name ES* keys must use, NULL otherwise */
} jwt_auth_algs[] = {
    {"HS256", JWT_ALG_HS256, NULL},         {"HS384", JWT_ALG_HS384, NULL},
    {"HS512", JWT_ALG_HS512, NULL},         {"RS256", JWT_ALG_RS256, NULL},
    {"RS384", JWT_ALG_RS384, NULL},         {"RS512", JWT_ALG_RS512, NULL},
    {"ES256", JWT_ALG_ES256, "prime256v1"}, {"ES384", JWT_ALG_ES384, "secp384r1"},
    {"ES512", JWT_ALG_ES512, "secp521r1"},
};

#define JWT_AUTH_NALGS (sizeof(jwt_auth_algs) / sizeof(jwt_auth_algs[0]))

/* Indexed by -result; the one place the client-facing reasons live. */
static const struct {
    const char *name;
    const char *reason;
} jwt_auth_results[] = {
    [-JWT_AUTH_OK] = {"ok", "Token valid"},
    [-JWT_AUTH_MALFORMED] = {"malformed", "Malformed token"},
    [-JWT_AUTH_BAD_ALG] = {"bad_alg", "Token algorithm not allowed"},
    [-JWT_AUTH_BAD_SIGNATURE] = {"bad_signature", "Invalid token signature"},
    [-JWT_AUTH_EXPIRED] = {"expired", "Token expired"},
    [-JWT_AUTH_NOT_YET_VALID] = {"not_yet_valid", "Token not yet valid"},
    [-JWT_AUTH_MISSING_EXP] = {"missing_exp", "Token has no expiry"},
    [-JWT_AUTH_BAD_ISSUER] = {"bad_issuer", "Token issuer not accepted"},
    [-JWT_AUTH_BAD_AUDIENCE] = {"bad_audience", "Token audience not accepted"},
    [-JWT_AUTH_NO_SUBJECT] = {"no_subject", "Token names no user"},
    [-JWT_AUTH_BAD_USER_ID] = {"bad_user_id", "Token user id is not a non-empty string"},
    [-JWT_AUTH_NO_MEMORY] = {"no_memory", "Out of memory while verifying token"},
};

#define JWT_AUTH_NRESULTS (sizeof(jwt_auth_results) / sizeof(jwt_auth_results[0]))

const char *jwt_auth_reason(enum jwt_auth_result result) {
    int index = -(int)result;

    if (index < 0 || (size_t)index >= JWT_AUTH_NRESULTS) return "Invalid token";
    return jwt_auth_results[index].reason;
}

const char *jwt_auth_result_name(enum jwt_auth_result result) {
    int index = -(int)result;

    if (index < 0 || (size_t)index >= JWT_AUTH_NRESULTS) return "unknown";
    return jwt_auth_results[index].name;
}

void herald_user_free(herald_user *user) {
    if (!user) return;
    free(user->user_id);
    free(user->email);
    free(user->role);
    free(user);
}

/* ---------------------------------------------------------------- settings */

static void set_err(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_size, const char *fmt, ...) {
    va_list ap;

    if (!err || err_size == 0) return;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

/* Reads the whole file into a new buffer (caller frees). Returns 0, or -1 with
 * errno set (EFBIG when over JWT_AUTH_MAX_KEY_FILE). */
static int read_file(const char *path, unsigned char **out, size_t *out_len) {
    FILE *fp = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    int saved;

    if (!fp) return -1;
    for (;;) {
        size_t n;

        if (len == cap) {
            unsigned char *grown;

            if (cap >= JWT_AUTH_MAX_KEY_FILE) {
                errno = EFBIG;
                goto fail;
            }
            cap = cap ? cap * 2 : 4096;
            grown = realloc(buf, cap);
            if (!grown) goto fail;
            buf = grown;
        }
        n = fread(buf + len, 1, cap - len, fp);
        len += n;
        if (n == 0) {
            if (ferror(fp)) goto fail;
            break;
        }
    }
    fclose(fp);
    *out = buf;
    *out_len = len;
    return 0;

fail:
    saved = errno ? errno : EIO;
    free(buf);
    fclose(fp);
    errno = saved;
    return -1;
}

/* Checks that pem is a public key usable for alg (RSA for RS*, EC on the
 * matching curve for ES*), so that a wrong file fails at startup, not at the
 * first client. */
static int check_public_key(const unsigned char *pem, size_t pem_len, size_t alg_index,
                            const char *path, char *err, size_t err_size) {
    const char *alg_name = jwt_auth_algs[alg_index].name;
    const char *curve = jwt_auth_algs[alg_index].curve;
    BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
    EVP_PKEY *pkey = NULL;
    int rc = -1;

    if (!bio) {
        set_err(err, err_size, "out of memory reading --jwt-key %s", path);
        goto done;
    }
    pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    if (!pkey) {
        if (memmem(pem, pem_len, "PRIVATE KEY-----", 16))
            set_err(err, err_size,
                    "--jwt-key %s holds a private key; give the PEM public key "
                    "(openssl pkey -in KEY -pubout)",
                    path);
        else
            set_err(err, err_size, "--jwt-key %s is not a PEM public key (BEGIN PUBLIC KEY)", path);
        goto done;
    }
    if (!curve) {
        if (!EVP_PKEY_is_a(pkey, "RSA")) {
            set_err(err, err_size, "--jwt-key %s is not an RSA public key, as %s needs", path,
                    alg_name);
            goto done;
        }
    } else {
        char group[64];
        size_t group_len = 0;

        if (!EVP_PKEY_is_a(pkey, "EC")) {
            set_err(err, err_size, "--jwt-key %s is not an EC public key, as %s needs", path,
                    alg_name);
            goto done;
        }
        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                            &group_len) ||
            strcmp(group, curve) != 0) {
            set_err(err, err_size, "--jwt-key %s is not on curve %s, as %s needs", path, curve,
                    alg_name);
            goto done;
        }
    }
    rc = 0;

done:
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    /* Failed parses leave errors on this thread's queue, where they would
     * confuse the next SSL_get_error() of a TLS connection. */
    ERR_clear_error();
    return rc;
}

int jwt_auth_init(struct jwt_auth *auth, const char *alg_name, const char *secret,
                  const char *key_file, const char *issuer, const char *audience, char *err,
                  size_t err_size) {
    size_t i;
    bool hmac;

    memset(auth, 0, sizeof(*auth));
    auth->leeway = JWT_AUTH_DEFAULT_LEEWAY;
    auth->require_exp = true;

    for (i = 0; i < JWT_AUTH_NALGS; i++)
        if (alg_name && strcmp(alg_name, jwt_auth_algs[i].name) == 0) break;
    if (i == JWT_AUTH_NALGS) {
        set_err(err, err_size,
                "unknown JWT algorithm \"%s\" (use HS256, HS384, HS512, RS256, RS384, RS512, "
                "ES256, ES384 or ES512)",
                alg_name ? alg_name : "");
        return -1;
    }
    auth->alg = jwt_auth_algs[i].alg;
    hmac = jwt_auth_algs[i].alg <= JWT_ALG_HS512;

    if (hmac) {
        if (key_file) {
            set_err(err, err_size, "%s takes a secret, not --jwt-key", alg_name);
            return -1;
        }
        if (!secret || !*secret) {
            set_err(err, err_size, "%s needs a non-empty JWT secret", alg_name);
            return -1;
        }
        auth->key_len = strlen(secret);
        auth->key = (unsigned char *)strdup(secret);
        if (!auth->key) {
            set_err(err, err_size, "out of memory");
            goto fail;
        }
    } else {
        if (secret) {
            set_err(err, err_size, "%s takes --jwt-key (a PEM public key), not a secret", alg_name);
            return -1;
        }
        if (!key_file || !*key_file) {
            set_err(err, err_size, "%s needs --jwt-key (a PEM public key file)", alg_name);
            return -1;
        }
        if (read_file(key_file, &auth->key, &auth->key_len) < 0) {
            set_err(err, err_size, "cannot read --jwt-key %s: %s", key_file, strerror(errno));
            goto fail;
        }
        if (check_public_key(auth->key, auth->key_len, i, key_file, err, err_size) < 0) goto fail;
    }
    if (auth->key_len > INT32_MAX) { /* jwt_decode takes an int */
        set_err(err, err_size, "JWT key too long");
        goto fail;
    }

    /* An empty --jwt-issuer/--jwt-audience means "not checked", as when absent. */
    if (issuer && *issuer && !(auth->issuer = strdup(issuer))) {
        set_err(err, err_size, "out of memory");
        goto fail;
    }
    if (audience && *audience && !(auth->audience = strdup(audience))) {
        set_err(err, err_size, "out of memory");
        goto fail;
    }
    return 0;

fail:
    jwt_auth_free(auth);
    return -1;
}

void jwt_auth_free(struct jwt_auth *auth) {
    if (!auth) return;
    if (auth->key) OPENSSL_cleanse(auth->key, auth->key_len);
    free(auth->key);
    free(auth->issuer);
    free(auth->audience);
    memset(auth, 0, sizeof(*auth));
}

/* ---------------------------------------------------------------- verify */

static bool is_base64url_char(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Decodes one unpadded base64url part into a JSON object (caller decrefs).
 * Returns JWT_AUTH_OK, MALFORMED or NO_MEMORY. */
static enum jwt_auth_result decode_json_part(const char *part, size_t len, json_t **out) {
    size_t padded_len, i;
    char *b64;
    unsigned char *raw;
    int raw_len;
    json_t *json;

    *out = NULL;
    if (len % 4 == 1) return JWT_AUTH_MALFORMED; /* no base64 encoding has this length */
    padded_len = (len + 3) / 4 * 4;
    b64 = malloc(padded_len + 1);
    raw = malloc(padded_len / 4 * 3 + 1);
    if (!b64 || !raw) {
        free(b64);
        free(raw);
        return JWT_AUTH_NO_MEMORY;
    }
    for (i = 0; i < len; i++) b64[i] = part[i] == '-' ? '+' : part[i] == '_' ? '/' : part[i];
    for (; i < padded_len; i++) b64[i] = '=';
    b64[padded_len] = '\0';

    /* EVP_DecodeBlock counts padding as zero bytes; drop them again. */
    raw_len = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)padded_len);
    free(b64);
    if (raw_len < 0) {
        free(raw);
        return JWT_AUTH_MALFORMED;
    }
    raw_len -= (int)(padded_len - len);

    json = json_loadb((const char *)raw, (size_t)raw_len, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (!json) return JWT_AUTH_MALFORMED;
    if (!json_is_object(json)) {
        json_decref(json);
        return JWT_AUTH_MALFORMED;
    }
    *out = json;
    return JWT_AUTH_OK;
}

/* Reads a NumericDate claim: any JSON number, as RFC 7519 allows fractional
 * seconds ("exp": 1.79e9). Returns 1 when present (*value set), 0 when absent,
 * -1 when present but not a number. */
static int get_time_claim(json_t *claims, const char *name, double *value) {
    json_t *v = json_object_get(claims, name);

    if (!v) return 0;
    if (!json_is_number(v)) return -1;
    *value = json_number_value(v);
    return 1;
}

/* An expiry as whole seconds for herald_user.exp: the last second at which the
 * token is still valid is floor(exp), clamped to int64_t. */
static int64_t exp_seconds(double exp) {
    if (exp >= 9.2e18) return INT64_MAX;
    if (exp <= -9.2e18) return INT64_MIN;
    return (int64_t)floor(exp);
}

static bool audience_matches(json_t *aud, const char *audience) {
    size_t i;
    json_t *item;

    if (json_is_string(aud)) return strcmp(json_string_value(aud), audience) == 0;
    if (!json_is_array(aud)) return false;
    json_array_foreach(aud, i, item) {
        if (json_is_string(item) && strcmp(json_string_value(item), audience) == 0) return true;
    }
    return false;
}

/* Returns a new copy of the user id: the "userId" claim when present, else
 * "sub". The claim chosen must be a non-empty string: a present userId of any
 * other type (number, array, object, bool, null, "") refuses the token rather
 * than falling back to sub, so a token never names a user it did not mean.
 * NULL with *result set when no usable id. */
static char *get_user_id(json_t *claims, enum jwt_auth_result *result) {
    json_t *v = json_object_get(claims, "userId");
    char *id;

    if (!v) v = json_object_get(claims, "sub");
    if (!v) {
        *result = JWT_AUTH_NO_SUBJECT;
        return NULL;
    }
    if (!json_is_string(v) || json_string_length(v) == 0) {
        *result = JWT_AUTH_BAD_USER_ID;
        return NULL;
    }
    id = strdup(json_string_value(v));
    if (!id) *result = JWT_AUTH_NO_MEMORY;
    return id;
}

/* Copies an optional string claim; a missing or non-string claim gives NULL. */
static int copy_optional_string(json_t *claims, const char *name, char **out) {
    json_t *v = json_object_get(claims, name);

    *out = NULL;
    if (!json_is_string(v)) return 0;
    *out = strdup(json_string_value(v));
    return *out ? 0 : -1;
}

static enum jwt_auth_result check_claims(const struct jwt_auth *auth, json_t *claims, time_t now,
                                         int64_t *exp_out) {
    double exp = 0, nbf = 0, iat = 0;
    int has;

    /* Compared as doubles: exact for every integer second up to 2^53, and a
     * huge exp cannot overflow. */
    has = get_time_claim(claims, "exp", &exp);
    if (has < 0) return JWT_AUTH_MALFORMED;
    if (has == 0 && auth->require_exp) return JWT_AUTH_MISSING_EXP;
    if (has == 1 && (double)now - auth->leeway > exp) return JWT_AUTH_EXPIRED;
    *exp_out = has == 1 ? exp_seconds(exp) : 0;

    has = get_time_claim(claims, "nbf", &nbf);
    if (has < 0) return JWT_AUTH_MALFORMED;
    if (has == 1 && (double)now + auth->leeway < nbf) return JWT_AUTH_NOT_YET_VALID;

    /* iat is informational, but must still be a NumericDate when present. */
    if (get_time_claim(claims, "iat", &iat) < 0) return JWT_AUTH_MALFORMED;

    if (auth->issuer) {
        json_t *iss = json_object_get(claims, "iss");

        if (!json_is_string(iss) || strcmp(json_string_value(iss), auth->issuer) != 0)
            return JWT_AUTH_BAD_ISSUER;
    }
    if (auth->audience && !audience_matches(json_object_get(claims, "aud"), auth->audience))
        return JWT_AUTH_BAD_AUDIENCE;
    return JWT_AUTH_OK;
}

static enum jwt_auth_result build_user(json_t *claims, int64_t exp, herald_user **user) {
    enum jwt_auth_result result = JWT_AUTH_OK;
    herald_user *u = calloc(1, sizeof(*u));

    if (!u) return JWT_AUTH_NO_MEMORY;
    u->user_id = get_user_id(claims, &result);
    if (!u->user_id) {
        herald_user_free(u);
        return result;
    }
    if (copy_optional_string(claims, "email", &u->email) < 0 ||
        copy_optional_string(claims, "role", &u->role) < 0) {
        herald_user_free(u);
        return JWT_AUTH_NO_MEMORY;
    }
    u->admin = u->role && strcmp(u->role, "admin") == 0;
    u->exp = exp;
    *user = u;
    return JWT_AUTH_OK;
}

/* libjwt checks the signature; we only tell it the key once the header named
 * the pinned algorithm, so the key can never be used as an HMAC secret. */
static enum jwt_auth_result check_signature(const struct jwt_auth *auth, const char *token) {
    jwt_t *jwt = NULL;
    int rc = jwt_decode(&jwt, token, auth->key, (int)auth->key_len);
    enum jwt_auth_result result = JWT_AUTH_OK;

    if (rc != 0)
        result = rc == ENOMEM ? JWT_AUTH_NO_MEMORY : JWT_AUTH_BAD_SIGNATURE;
    else if ((int)jwt_get_alg(jwt) != auth->alg)
        result = JWT_AUTH_BAD_ALG;
    jwt_free(jwt);
    ERR_clear_error(); /* see check_public_key */
    return result;
}

enum jwt_auth_result jwt_auth_verify(const struct jwt_auth *auth, const char *token, time_t now,
                                     herald_user **user) {
    size_t len, dots[2], ndots = 0, i;
    json_t *header = NULL, *claims = NULL, *v;
    enum jwt_auth_result result;
    int64_t exp = 0;

    *user = NULL;
    if (!token) return JWT_AUTH_MALFORMED;
    len = strnlen(token, JWT_AUTH_MAX_TOKEN + 1);
    if (len > JWT_AUTH_MAX_TOKEN) return JWT_AUTH_MALFORMED;
    for (i = 0; i < len; i++) {
        if (token[i] == '.') {
            if (ndots == 2) return JWT_AUTH_MALFORMED;
            dots[ndots++] = i;
        } else if (!is_base64url_char((unsigned char)token[i])) {
            return JWT_AUTH_MALFORMED;
        }
    }
    /* Header and payload must be non-empty; the signature may be empty so
     * that an unsigned ("alg":"none") token reports bad_alg. */
    if (ndots != 2 || dots[0] == 0 || dots[1] == dots[0] + 1) return JWT_AUTH_MALFORMED;

    result = decode_json_part(token, dots[0], &header);
    if (result != JWT_AUTH_OK) goto done;
    v = json_object_get(header, "alg");
    if (!json_is_string(v) ||
        strcmp(json_string_value(v), jwt_alg_str((jwt_alg_t)auth->alg)) != 0) {
        result = JWT_AUTH_BAD_ALG;
        goto done;
    }
    /* libjwt 1.10 refuses any "typ" other than "JWT" (case-insensitively) with
     * the same EINVAL as a bad signature; name it for what it is. */
    v = json_object_get(header, "typ");
    if (json_is_string(v) && strcasecmp(json_string_value(v), "JWT") != 0) {
        result = JWT_AUTH_MALFORMED;
        goto done;
    }
    result = decode_json_part(token + dots[0] + 1, dots[1] - dots[0] - 1, &claims);
    if (result != JWT_AUTH_OK) goto done;

    result = check_signature(auth, token);
    if (result != JWT_AUTH_OK) goto done;
    result = check_claims(auth, claims, now, &exp);
    if (result != JWT_AUTH_OK) goto done;
    result = build_user(claims, exp, user);

done:
    json_decref(header);
    json_decref(claims);
    return result;
}
