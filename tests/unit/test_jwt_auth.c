/* test_jwt_auth.c -- unit tests for common/jwt_auth: algorithm pinning,
 * signatures for all nine algorithms, time claims, iss/aud, subject claims,
 * malformed input and startup errors.
 *
 * Keys (RSA 2048, EC P-256/P-384/P-521) are generated at run time with
 * OpenSSL; public keys go to temporary PEM files for jwt_auth_init, private
 * keys stay in memory for libjwt's signer. Nothing touches the network. */
#include "jwt_auth.h"
#include "testlib.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#define NOW    ((time_t)1700000000)
#define SECRET "correct horse battery staple"

/* A generated key pair: private PEM in memory (for signing with libjwt) and
 * public PEM both in memory and in a temporary file (for jwt_auth_init). */
struct test_key {
    EVP_PKEY *pkey;
    char *private_pem;
    char *public_pem;
    char public_path[64];
};

static struct test_key rsa_key, rsa_other_key, ec256_key, ec384_key, ec521_key;

static char *pem_to_string(EVP_PKEY *pkey, int private_part) {
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *copy;
    long len;

    if (!bio) return NULL;
    if (private_part ? !PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL)
                     : !PEM_write_bio_PUBKEY(bio, pkey)) {
        BIO_free(bio);
        return NULL;
    }
    len = BIO_get_mem_data(bio, &data);
    copy = strndup(data, (size_t)len);
    BIO_free(bio);
    return copy;
}

/* Writes data to a new temporary file whose path lands in path (64 bytes). */
static int write_temp_file(const char *data, size_t len, char *path) {
    int fd;

    strcpy(path, "/tmp/herald-jwt-test-XXXXXX");
    fd = mkstemp(path);
    if (fd < 0) return -1;
    if (write(fd, data, len) != (ssize_t)len) {
        close(fd);
        return -1;
    }
    return close(fd);
}

static int make_key(struct test_key *key, const char *type, const char *curve) {
    if (strcmp(type, "RSA") == 0)
        key->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    else
        key->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
    if (!key->pkey) return -1;
    key->private_pem = pem_to_string(key->pkey, 1);
    key->public_pem = pem_to_string(key->pkey, 0);
    if (!key->private_pem || !key->public_pem) return -1;
    return write_temp_file(key->public_pem, strlen(key->public_pem), key->public_path);
}

static void free_key(struct test_key *key) {
    if (key->public_path[0]) unlink(key->public_path);
    EVP_PKEY_free(key->pkey);
    free(key->private_pem);
    free(key->public_pem);
    memset(key, 0, sizeof(*key));
}

/* ---------------------------------------------------------------- helpers */

static char *base64url(const unsigned char *data, size_t len) {
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    int n, i, j;

    if (!out) return NULL;
    n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    for (i = j = 0; i < n; i++) {
        if (out[i] == '=') continue;
        out[j++] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    }
    out[j] = '\0';
    return out;
}

static char *base64url_str(const char *s) {
    return base64url((const unsigned char *)s, strlen(s));
}

/* Decodes base64url into buf; returns the length or -1. */
static int base64url_decode(const char *s, size_t len, unsigned char *buf, size_t buf_size) {
    char tmp[4096];
    size_t padded = (len + 3) / 4 * 4, i;
    int n;

    if (padded >= sizeof(tmp) || padded / 4 * 3 > buf_size) return -1;
    for (i = 0; i < len; i++) tmp[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    for (; i < padded; i++) tmp[i] = '=';
    n = EVP_DecodeBlock(buf, (unsigned char *)tmp, (int)padded);
    return n < 0 ? -1 : n - (int)(padded - len);
}

/* Signs claims_json with libjwt (the way herald-token and most issuers do). */
static char *sign_token(jwt_alg_t alg, const void *key, size_t key_len, const char *claims_json) {
    jwt_t *jwt = NULL;
    char *token = NULL;

    if (jwt_new(&jwt) != 0) return NULL;
    if (jwt_add_grants_json(jwt, claims_json) == 0 && jwt_set_alg(jwt, alg, key, (int)key_len) == 0)
        token = jwt_encode_str(jwt);
    jwt_free(jwt);
    return token;
}

static char *sign_hs256(const char *claims_json) {
    return sign_token(JWT_ALG_HS256, SECRET, strlen(SECRET), claims_json);
}

/* Builds "header.payload.signature" from raw JSON strings, with an HMAC-SHA256
 * signature computed here by OpenSSL (so headers libjwt would never write can
 * be tested). */
static char *hand_token_hs256(const char *header_json, const char *claims_json,
                              const char *secret) {
    char *h = base64url_str(header_json), *p = base64url_str(claims_json), *s, *token;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    size_t len;

    len = strlen(h) + strlen(p) + 2;
    token = malloc(len + 100);
    snprintf(token, len + 100, "%s.%s", h, p);
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)token, strlen(token), mac,
         &mac_len);
    s = base64url(mac, mac_len);
    strcat(token, ".");
    strcat(token, s);
    free(h);
    free(p);
    free(s);
    return token;
}

static char *claims_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *claims_fmt(const char *fmt, ...) {
    static char buf[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return buf;
}

#define VALID_CLAIMS claims_fmt("{\"sub\":\"u1\",\"exp\":%ld}", (long)NOW + 600)

static int init_hs(struct jwt_auth *auth, const char *alg) {
    char err[256];

    return jwt_auth_init(auth, alg, SECRET, NULL, NULL, NULL, err, sizeof(err));
}

static int init_pem(struct jwt_auth *auth, const char *alg, const struct test_key *key) {
    char err[256];
    int rc = jwt_auth_init(auth, alg, NULL, key->public_path, NULL, NULL, err, sizeof(err));

    if (rc != 0) fprintf(stderr, "  jwt_auth_init(%s): %s\n", alg, err);
    return rc;
}

/* Verifies token with auth at NOW, frees both, and returns the result. */
static enum jwt_auth_result verify_and_free(const struct jwt_auth *auth, char *token) {
    herald_user *user = NULL;
    enum jwt_auth_result result = jwt_auth_verify(auth, token, NOW, &user);

    if (result == JWT_AUTH_OK && !user) result = (enum jwt_auth_result) - 100;
    if (result != JWT_AUTH_OK && user) result = (enum jwt_auth_result) - 101;
    herald_user_free(user);
    free(token);
    return result;
}

static enum jwt_auth_result verify_hs256_claims(const struct jwt_auth *auth, const char *claims) {
    return verify_and_free(auth, sign_hs256(claims));
}

/* ---------------------------------------------------------------- tests */

static void test_hs256_token_gives_user_with_claims(void) {
    struct jwt_auth auth;
    herald_user *user = NULL;
    char *token;

    CHECK_INT(init_hs(&auth, "HS256"), 0);
    token = sign_hs256(claims_fmt("{\"sub\":\"u1\",\"email\":\"a@b.c\",\"role\":\"editor\","
                                  "\"exp\":%ld}",
                                  (long)NOW + 600));
    CHECK_INT(jwt_auth_verify(&auth, token, NOW, &user), JWT_AUTH_OK);
    CHECK(user != NULL);
    if (user) {
        CHECK_STR(user->user_id, "u1");
        CHECK_STR(user->email, "a@b.c");
        CHECK_STR(user->role, "editor");
        CHECK(!user->admin);
        CHECK_INT(user->exp, (long)NOW + 600);
    }
    herald_user_free(user);
    free(token);
    jwt_auth_free(&auth);
}

static void test_all_nine_algorithms_verify_their_own_tokens(void) {
    static const struct {
        const char *name;
        jwt_alg_t alg;
        struct test_key *key; /* NULL for HMAC */
    } cases[] = {
        {"HS256", JWT_ALG_HS256, NULL},       {"HS384", JWT_ALG_HS384, NULL},
        {"HS512", JWT_ALG_HS512, NULL},       {"RS256", JWT_ALG_RS256, &rsa_key},
        {"RS384", JWT_ALG_RS384, &rsa_key},   {"RS512", JWT_ALG_RS512, &rsa_key},
        {"ES256", JWT_ALG_ES256, &ec256_key}, {"ES384", JWT_ALG_ES384, &ec384_key},
        {"ES512", JWT_ALG_ES512, &ec521_key},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct jwt_auth auth;
        char *token;
        int rc;

        if (cases[i].key) {
            rc = init_pem(&auth, cases[i].name, cases[i].key);
            token = sign_token(cases[i].alg, cases[i].key->private_pem,
                               strlen(cases[i].key->private_pem), VALID_CLAIMS);
        } else {
            rc = init_hs(&auth, cases[i].name);
            token = sign_token(cases[i].alg, SECRET, strlen(SECRET), VALID_CLAIMS);
        }
        CHECK_INT(rc, 0);
        CHECK(token != NULL);
        if (rc != 0 || !token) {
            fprintf(stderr, "  case %s\n", cases[i].name);
            free(token);
            continue;
        }
        rc = verify_and_free(&auth, token);
        if (rc != JWT_AUTH_OK) fprintf(stderr, "  case %s\n", cases[i].name);
        CHECK_INT(rc, JWT_AUTH_OK);
        jwt_auth_free(&auth);
    }
}

/* JOSE (RFC 7518 3.4) wants ECDSA signatures as raw R||S, not DER. Check that
 * libjwt 1.10 writes that, by size and by verifying it with OpenSSL. */
static void test_libjwt_es_signatures_are_jose_raw_r_s(void) {
    static const struct {
        jwt_alg_t alg;
        struct test_key *key;
        size_t half; /* bytes of R and of S */
    } cases[] = {
        {JWT_ALG_ES256, &ec256_key, 32},
        {JWT_ALG_ES384, &ec384_key, 48},
        {JWT_ALG_ES512, &ec521_key, 66},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const EVP_MD *md = cases[i].alg == JWT_ALG_ES256   ? EVP_sha256()
                           : cases[i].alg == JWT_ALG_ES384 ? EVP_sha384()
                                                           : EVP_sha512();
        char *token = sign_token(cases[i].alg, cases[i].key->private_pem,
                                 strlen(cases[i].key->private_pem), VALID_CLAIMS);
        unsigned char raw[256], *der = NULL;
        const char *dot;
        int raw_len, der_len;
        ECDSA_SIG *sig;
        EVP_MD_CTX *ctx;

        CHECK(token != NULL);
        if (!token) continue;
        dot = strrchr(token, '.');
        raw_len = base64url_decode(dot + 1, strlen(dot + 1), raw, sizeof(raw));
        CHECK_INT(raw_len, 2 * cases[i].half);
        if (raw_len != (int)(2 * cases[i].half)) {
            free(token);
            continue;
        }

        sig = ECDSA_SIG_new();
        ECDSA_SIG_set0(sig, BN_bin2bn(raw, (int)cases[i].half, NULL),
                       BN_bin2bn(raw + cases[i].half, (int)cases[i].half, NULL));
        der_len = i2d_ECDSA_SIG(sig, &der);
        ctx = EVP_MD_CTX_new();
        CHECK_INT(EVP_DigestVerifyInit(ctx, NULL, md, NULL, cases[i].key->pkey), 1);
        CHECK_INT(EVP_DigestVerify(ctx, der, (size_t)der_len, (unsigned char *)token,
                                   (size_t)(dot - token)),
                  1);
        EVP_MD_CTX_free(ctx);
        OPENSSL_free(der);
        ECDSA_SIG_free(sig);
        free(token);
    }
}

/* Signs "header.payload" with OpenSSL for ES256; raw selects the JOSE R||S
 * form, else the DER that some broken issuers send. */
static char *hand_token_es256(const char *claims_json, int raw) {
    char *h = base64url_str("{\"alg\":\"ES256\",\"typ\":\"JWT\"}"), *p = base64url_str(claims_json);
    char *token = malloc(strlen(h) + strlen(p) + 400), *s;
    unsigned char der[128], rs[64];
    const unsigned char *der_ptr = der;
    size_t der_len = sizeof(der);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ECDSA_SIG *sig;
    const BIGNUM *r, *sv;

    sprintf(token, "%s.%s", h, p);
    EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, ec256_key.pkey);
    EVP_DigestSign(ctx, der, &der_len, (unsigned char *)token, strlen(token));
    EVP_MD_CTX_free(ctx);
    if (raw) {
        sig = d2i_ECDSA_SIG(NULL, &der_ptr, (long)der_len);
        ECDSA_SIG_get0(sig, &r, &sv);
        BN_bn2binpad(r, rs, 32);
        BN_bn2binpad(sv, rs + 32, 32);
        ECDSA_SIG_free(sig);
        s = base64url(rs, sizeof(rs));
    } else {
        s = base64url(der, der_len);
    }
    strcat(token, ".");
    strcat(token, s);
    free(h);
    free(p);
    free(s);
    return token;
}

/* The time claims, at NOW = 1700000000 with the leeway given. NumericDates are
 * any JSON number (RFC 7519 2): fractions and exponents are accepted and
 * compared as real numbers; user_exp is the whole second kept in the user. */
static void test_time_claims_table(void) {
    static const struct {
        const char *what;
        const char *time_claims; /* JSON members after "sub" */
        int leeway;
        enum jwt_auth_result result;
        long long user_exp; /* checked when result is OK */
    } cases[] = {
        {"exp ahead", "\"exp\":1700000600", 30, JWT_AUTH_OK, 1700000600},
        {"exp an hour ago", "\"exp\":1699996400", 30, JWT_AUTH_EXPIRED, 0},
        {"exp just past the leeway", "\"exp\":1699999969", 30, JWT_AUTH_EXPIRED, 0},
        {"exp at the leeway", "\"exp\":1699999970", 30, JWT_AUTH_OK, 1699999970},
        {"exp within the leeway", "\"exp\":1699999990", 30, JWT_AUTH_OK, 1699999990},
        {"exp a second ago, no leeway", "\"exp\":1699999999", 0, JWT_AUTH_EXPIRED, 0},
        {"exp now, no leeway", "\"exp\":1700000000", 0, JWT_AUTH_OK, 1700000000},
        {"exp as exponent", "\"exp\":1.79e9", 30, JWT_AUTH_OK, 1790000000},
        {"exp with fraction", "\"exp\":1700000600.75", 30, JWT_AUTH_OK, 1700000600},
        {"exp fraction past, no leeway", "\"exp\":1699999999.5", 0, JWT_AUTH_EXPIRED, 0},
        {"exp fraction ahead, no leeway", "\"exp\":1700000000.5", 0, JWT_AUTH_OK, 1700000000},
        {"exp in the past as exponent", "\"exp\":1.6e9", 30, JWT_AUTH_EXPIRED, 0},
        {"exp far future", "\"exp\":9223372036854775807", 30, JWT_AUTH_OK, INT64_MAX},
        {"exp huge real", "\"exp\":1e300", 30, JWT_AUTH_OK, INT64_MAX},
        {"exp far past", "\"exp\":-9223372036854775807", 30, JWT_AUTH_EXPIRED, 0},
        {"exp a string", "\"exp\":\"tomorrow\"", 30, JWT_AUTH_MALFORMED, 0},
        {"exp null", "\"exp\":null", 30, JWT_AUTH_MALFORMED, 0},
        {"exp true", "\"exp\":true", 30, JWT_AUTH_MALFORMED, 0},
        {"nbf beyond the leeway", "\"exp\":1700000600,\"nbf\":1700000060", 30,
         JWT_AUTH_NOT_YET_VALID, 0},
        {"nbf within the leeway", "\"exp\":1700000600,\"nbf\":1700000020", 30, JWT_AUTH_OK,
         1700000600},
        {"nbf past", "\"exp\":1700000600,\"nbf\":1699999940", 30, JWT_AUTH_OK, 1700000600},
        {"nbf fraction ahead, no leeway", "\"exp\":1700000600,\"nbf\":1700000000.5", 0,
         JWT_AUTH_NOT_YET_VALID, 0},
        {"nbf fraction past, no leeway", "\"exp\":1700000600,\"nbf\":1699999999.5", 0, JWT_AUTH_OK,
         1700000600},
        {"nbf as exponent", "\"exp\":1700000600,\"nbf\":1.6e9", 30, JWT_AUTH_OK, 1700000600},
        {"nbf null", "\"exp\":1700000600,\"nbf\":null", 30, JWT_AUTH_MALFORMED, 0},
        {"iat integer", "\"exp\":1700000600,\"iat\":1700000000", 30, JWT_AUTH_OK, 1700000600},
        {"iat real", "\"exp\":1700000600,\"iat\":1.7e9", 30, JWT_AUTH_OK, 1700000600},
        {"iat a string", "\"exp\":1700000600,\"iat\":\"now\"", 30, JWT_AUTH_MALFORMED, 0},
    };
    struct jwt_auth auth;

    CHECK_INT(init_hs(&auth, "HS256"), 0);
    CHECK_INT(auth.leeway, JWT_AUTH_DEFAULT_LEEWAY);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        herald_user *user = NULL;
        char *token = sign_hs256(claims_fmt("{\"sub\":\"u1\",%s}", cases[i].time_claims));
        enum jwt_auth_result rc;

        auth.leeway = cases[i].leeway;
        rc = jwt_auth_verify(&auth, token, NOW, &user);
        if (rc != cases[i].result || (user && user->exp != cases[i].user_exp))
            fprintf(stderr, "  case \"%s\": result %d, exp %lld\n", cases[i].what, rc,
                    user ? (long long)user->exp : 0LL);
        CHECK_INT(rc, cases[i].result);
        if (cases[i].result == JWT_AUTH_OK) CHECK(user && user->exp == cases[i].user_exp);
        herald_user_free(user);
        free(token);
    }
    jwt_auth_free(&auth);
}

static void test_missing_exp_refused_unless_not_required(void) {
    struct jwt_auth auth;
    herald_user *user = NULL;
    char *token = sign_hs256("{\"sub\":\"u1\"}");

    CHECK_INT(init_hs(&auth, "HS256"), 0);
    CHECK(auth.require_exp);
    CHECK_INT(jwt_auth_verify(&auth, token, NOW, &user), JWT_AUTH_MISSING_EXP);
    CHECK(user == NULL);
    auth.require_exp = false;
    CHECK_INT(jwt_auth_verify(&auth, token, NOW, &user), JWT_AUTH_OK);
    CHECK(user && user->exp == 0);
    herald_user_free(user);
    free(token);
    jwt_auth_free(&auth);
}

/* Swaps in another payload under the original header and signature. */
static char *tamper_payload(char *token, const char *claims_json) {
    char *first = strchr(token, '.'), *last = strrchr(token, '.');
    char *payload = base64url_str(claims_json);
    size_t size = strlen(token) + strlen(payload) + 1;
    char *out = malloc(size);

    snprintf(out, size, "%.*s.%s%s", (int)(first - token), token, payload, last);
    free(payload);
    free(token);
    return out;
}

/* ---------------------------------------------------------------- who signed what */

static char *admin_claims(void) {
    static char buf[256];
    snprintf(buf, sizeof(buf), "{\"sub\":\"u1\",\"role\":\"admin\",\"exp\":%ld}", (long)NOW + 600);
    return buf;
}

static char *with_private_key(jwt_alg_t alg, const struct test_key *key) {
    return sign_token(alg, key->private_pem, strlen(key->private_pem), VALID_CLAIMS);
}

static char *alg_none_token(const char *signature) {
    char *payload = base64url_str(VALID_CLAIMS), *token = malloc(strlen(payload) + 64);
    sprintf(token, "eyJhbGciOiJub25lIn0.%s.%s", payload, signature); /* {"alg":"none"} */
    free(payload);
    return token;
}

static char *tok_es256_openssl_raw(void) {
    return hand_token_es256(VALID_CLAIMS, 1);
}
static char *tok_es256_openssl_der(void) {
    return hand_token_es256(VALID_CLAIMS, 0);
}
static char *tok_hs384(void) {
    return sign_token(JWT_ALG_HS384, SECRET, strlen(SECRET), VALID_CLAIMS);
}
static char *tok_hs256(void) {
    return sign_hs256(VALID_CLAIMS);
}
static char *tok_alg_none(void) {
    return alg_none_token("");
}
static char *tok_alg_none_signed(void) {
    return alg_none_token("c2ln");
}
/* The classic confusion attack: the public key is public, so an attacker can
 * HMAC-sign with its PEM bytes and hope the verifier uses them as a secret. */
static char *tok_hmac_with_rsa_public_pem(void) {
    return sign_token(JWT_ALG_HS256, rsa_key.public_pem, strlen(rsa_key.public_pem), VALID_CLAIMS);
}
static char *tok_rs256(void) {
    return with_private_key(JWT_ALG_RS256, &rsa_key);
}
static char *tok_rs512(void) {
    return with_private_key(JWT_ALG_RS512, &rsa_key);
}
static char *tok_rs256_other_key(void) {
    return with_private_key(JWT_ALG_RS256, &rsa_other_key);
}
static char *tok_hs256_wrong_secret(void) {
    return sign_token(JWT_ALG_HS256, "not the secret", 14, VALID_CLAIMS);
}
static char *tok_hs256_tampered(void) {
    return tamper_payload(sign_hs256(VALID_CLAIMS), admin_claims());
}
static char *tok_rs256_tampered(void) {
    return tamper_payload(tok_rs256(), admin_claims());
}
static char *tok_es256_tampered(void) {
    return tamper_payload(with_private_key(JWT_ALG_ES256, &ec256_key), admin_claims());
}
static char *tok_hs256_truncated_signature(void) {
    char *token = sign_hs256(VALID_CLAIMS);
    token[strlen(token) - 4] = '\0';
    return token;
}
static char *tok_hs256_empty_signature(void) {
    char *token = sign_hs256(VALID_CLAIMS);
    strrchr(token, '.')[1] = '\0';
    return token;
}

/* Each token against the configured algorithm: a token naming another
 * algorithm is bad_alg before any key is used; a token of the right algorithm
 * that another key signed, or whose payload changed, is bad_signature. */
static void test_signer_table(void) {
    static struct jwt_auth hs256, rs256, es256;
    static const struct {
        const char *what;
        struct jwt_auth *auth;
        char *(*token)(void);
        enum jwt_auth_result result;
    } cases[] = {
        {"ES256 signed by OpenSSL, raw R||S", &es256, tok_es256_openssl_raw, JWT_AUTH_OK},
        {"ES256 signed by OpenSSL, DER", &es256, tok_es256_openssl_der, JWT_AUTH_BAD_SIGNATURE},
        {"HS384 to HS256", &hs256, tok_hs384, JWT_AUTH_BAD_ALG},
        {"alg none to HS256", &hs256, tok_alg_none, JWT_AUTH_BAD_ALG},
        {"alg none to RS256", &rs256, tok_alg_none, JWT_AUTH_BAD_ALG},
        {"alg none with a signature to HS256", &hs256, tok_alg_none_signed, JWT_AUTH_BAD_ALG},
        {"HS256 keyed with the RSA public PEM to RS256", &rs256, tok_hmac_with_rsa_public_pem,
         JWT_AUTH_BAD_ALG},
        {"RS256 to ES256", &es256, tok_rs256, JWT_AUTH_BAD_ALG},
        {"RS512 to RS256", &rs256, tok_rs512, JWT_AUTH_BAD_ALG},
        {"HS256 to RS256", &rs256, tok_hs256, JWT_AUTH_BAD_ALG},
        {"HS256 with another secret", &hs256, tok_hs256_wrong_secret, JWT_AUTH_BAD_SIGNATURE},
        {"RS256 by another key", &rs256, tok_rs256_other_key, JWT_AUTH_BAD_SIGNATURE},
        {"HS256 payload swapped for admin", &hs256, tok_hs256_tampered, JWT_AUTH_BAD_SIGNATURE},
        {"RS256 payload swapped for admin", &rs256, tok_rs256_tampered, JWT_AUTH_BAD_SIGNATURE},
        {"ES256 payload swapped for admin", &es256, tok_es256_tampered, JWT_AUTH_BAD_SIGNATURE},
        {"HS256 signature truncated", &hs256, tok_hs256_truncated_signature,
         JWT_AUTH_BAD_SIGNATURE},
        {"HS256 signature empty", &hs256, tok_hs256_empty_signature, JWT_AUTH_BAD_SIGNATURE},
    };

    CHECK_INT(init_hs(&hs256, "HS256"), 0);
    CHECK_INT(init_pem(&rs256, "RS256", &rsa_key), 0);
    CHECK_INT(init_pem(&es256, "ES256", &ec256_key), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *token = cases[i].token();
        enum jwt_auth_result rc;

        CHECK(token != NULL);
        if (!token) continue;
        rc = verify_and_free(cases[i].auth, token);
        if (rc != cases[i].result) fprintf(stderr, "  case \"%s\": %d\n", cases[i].what, rc);
        CHECK_INT(rc, cases[i].result);
    }
    jwt_auth_free(&hs256);
    jwt_auth_free(&rs256);
    jwt_auth_free(&es256);
}

/* Headers libjwt would never write, signed here with the right secret: the
 * alg must be exactly the pinned one, typ (when present) JWT in any case, and
 * no key may repeat (a duplicated "alg" could be read one way by us and
 * another by libjwt). libjwt 1.10 refuses other typ values with the EINVAL it
 * uses for bad signatures; we report them as malformed. */
static void test_header_table(void) {
    static const struct {
        const char *header;
        enum jwt_auth_result result;
    } cases[] = {
        {"{\"alg\":\"HS256\",\"typ\":\"JWT\"}", JWT_AUTH_OK},
        {"{\"alg\":\"HS256\"}", JWT_AUTH_OK},
        {"{\"alg\":\"HS256\",\"typ\":\"jwt\"}", JWT_AUTH_OK},
        {"{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", JWT_AUTH_MALFORMED},
        {"{\"alg\":\"hs256\"}", JWT_AUTH_BAD_ALG},
        {"{\"typ\":\"JWT\"}", JWT_AUTH_BAD_ALG},
        {"{\"alg\":256}", JWT_AUTH_BAD_ALG},
        {"{\"alg\":\"HS384\"}", JWT_AUTH_BAD_ALG},
        {"{\"alg\":\"none\"}", JWT_AUTH_BAD_ALG},
        {"{\"alg\":\"HS256\",\"alg\":\"none\"}", JWT_AUTH_MALFORMED},
        {"[\"HS256\"]", JWT_AUTH_MALFORMED},
    };
    struct jwt_auth auth;

    CHECK_INT(init_hs(&auth, "HS256"), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum jwt_auth_result rc =
            verify_and_free(&auth, hand_token_hs256(cases[i].header, VALID_CLAIMS, SECRET));

        if (rc != cases[i].result) fprintf(stderr, "  header %s\n", cases[i].header);
        CHECK_INT(rc, cases[i].result);
    }
    jwt_auth_free(&auth);
}

static void test_issuer_table(void) {
    static const struct {
        const char *configured; /* --jwt-issuer, NULL: not configured */
        const char *iss_json;   /* NULL: no iss claim */
        enum jwt_auth_result result;
    } cases[] = {
        {"https://auth.example", "\"https://auth.example\"", JWT_AUTH_OK},
        {"https://auth.example", "\"https://evil.example\"", JWT_AUTH_BAD_ISSUER},
        {"https://auth.example", "\"https://auth.example/\"", JWT_AUTH_BAD_ISSUER},
        {"https://auth.example", "[\"https://auth.example\"]", JWT_AUTH_BAD_ISSUER},
        {"https://auth.example", NULL, JWT_AUTH_BAD_ISSUER},
        {NULL, "\"anyone\"", JWT_AUTH_OK},
        {NULL, "42", JWT_AUTH_OK},
        {NULL, NULL, JWT_AUTH_OK},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct jwt_auth auth;
        char err[256], claims[256];
        enum jwt_auth_result rc;

        CHECK_INT(jwt_auth_init(&auth, "HS256", SECRET, NULL, cases[i].configured, NULL, err,
                                sizeof(err)),
                  0);
        if (cases[i].iss_json)
            snprintf(claims, sizeof(claims), "{\"sub\":\"u1\",\"exp\":%ld,\"iss\":%s}",
                     (long)NOW + 600, cases[i].iss_json);
        else
            snprintf(claims, sizeof(claims), "{\"sub\":\"u1\",\"exp\":%ld}", (long)NOW + 600);
        rc = verify_hs256_claims(&auth, claims);
        if (rc != cases[i].result)
            fprintf(stderr, "  issuer %s, iss %s\n",
                    cases[i].configured ? cases[i].configured : "-",
                    cases[i].iss_json ? cases[i].iss_json : "(absent)");
        CHECK_INT(rc, cases[i].result);
        jwt_auth_free(&auth);
    }
}

static void test_audience_string_or_array_must_contain_configured(void) {
    static const struct {
        const char *aud_json; /* NULL: no aud claim */
        enum jwt_auth_result expected;
    } cases[] = {
        {"\"herald\"", JWT_AUTH_OK},        {"[\"api\",\"herald\"]", JWT_AUTH_OK},
        {"\"api\"", JWT_AUTH_BAD_AUDIENCE}, {"[\"api\",\"web\"]", JWT_AUTH_BAD_AUDIENCE},
        {"[]", JWT_AUTH_BAD_AUDIENCE},      {"\"heraldx\"", JWT_AUTH_BAD_AUDIENCE},
        {"42", JWT_AUTH_BAD_AUDIENCE},      {NULL, JWT_AUTH_BAD_AUDIENCE},
    };
    struct jwt_auth auth;
    char err[256], claims[256];
    size_t i;

    CHECK_INT(jwt_auth_init(&auth, "HS256", SECRET, NULL, NULL, "herald", err, sizeof(err)), 0);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc;

        if (cases[i].aud_json)
            snprintf(claims, sizeof(claims), "{\"sub\":\"u1\",\"exp\":%ld,\"aud\":%s}",
                     (long)NOW + 600, cases[i].aud_json);
        else
            snprintf(claims, sizeof(claims), "{\"sub\":\"u1\",\"exp\":%ld}", (long)NOW + 600);
        rc = verify_hs256_claims(&auth, claims);
        if (rc != (int)cases[i].expected)
            fprintf(stderr, "  aud %s\n", cases[i].aud_json ? cases[i].aud_json : "(absent)");
        CHECK_INT(rc, cases[i].expected);
    }
    jwt_auth_free(&auth);
}

/* userId when present, else sub; the claim used must be a non-empty string,
 * and a present userId of any other type never falls back to sub. */
static void test_user_id_from_userid_then_sub(void) {
    static const struct {
        const char *claims;  /* exp is appended */
        const char *user_id; /* NULL: refused with result */
        enum jwt_auth_result result;
    } cases[] = {
        {"\"userId\":\"u-42\",\"sub\":\"auth0|abc\"", "u-42", JWT_AUTH_OK},
        {"\"sub\":\"auth0|abc\"", "auth0|abc", JWT_AUTH_OK},
        {"\"userId\":\"a\\nlevel=error\"", "a\nlevel=error", JWT_AUTH_OK},
        {"\"userId\":[\"x\"],\"sub\":\"bob\"", NULL, JWT_AUTH_BAD_USER_ID},
        {"\"userId\":{\"id\":\"x\"},\"sub\":\"bob\"", NULL, JWT_AUTH_BAD_USER_ID},
        {"\"userId\":42,\"sub\":\"bob\"", NULL, JWT_AUTH_BAD_USER_ID},
        {"\"userId\":1234567890123", NULL, JWT_AUTH_BAD_USER_ID},
        {"\"userId\":1.5,\"sub\":\"bob\"", NULL, JWT_AUTH_BAD_USER_ID},
        {"\"userId\":true,\"sub\":\"bob\"", NULL, JWT_AUTH_BAD_USER_ID},
        {"\"userId\":\"\",\"sub\":\"bob\"", NULL, JWT_AUTH_BAD_USER_ID},
        {"\"userId\":null,\"sub\":\"bob\"", NULL, JWT_AUTH_BAD_USER_ID},
        {"\"sub\":7", NULL, JWT_AUTH_BAD_USER_ID},
        {"\"sub\":\"\"", NULL, JWT_AUTH_BAD_USER_ID},
        {"\"sub\":[\"bob\"]", NULL, JWT_AUTH_BAD_USER_ID},
        {"\"email\":\"a@b.c\"", NULL, JWT_AUTH_NO_SUBJECT},
    };
    struct jwt_auth auth;
    size_t i;

    CHECK_INT(init_hs(&auth, "HS256"), 0);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        herald_user *user = NULL;
        char *token = sign_hs256(claims_fmt("{%s,\"exp\":%ld}", cases[i].claims, (long)NOW + 600));
        enum jwt_auth_result rc = jwt_auth_verify(&auth, token, NOW, &user);

        if (rc != cases[i].result) fprintf(stderr, "  claims %s\n", cases[i].claims);
        CHECK_INT(rc, cases[i].result);
        if (cases[i].user_id)
            CHECK_STR(user ? user->user_id : NULL, cases[i].user_id);
        else
            CHECK(user == NULL);
        herald_user_free(user);
        free(token);
    }
    jwt_auth_free(&auth);
}

static void test_role_admin_makes_admin(void) {
    static const struct {
        const char *role_json; /* NULL: no role claim */
        const char *role;
        bool admin;
    } cases[] = {
        {"\"admin\"", "admin", true}, {"\"Admin\"", "Admin", false}, {"\"user\"", "user", false},
        {"[\"admin\"]", NULL, false}, {NULL, NULL, false},
    };
    struct jwt_auth auth;
    size_t i;

    CHECK_INT(init_hs(&auth, "HS256"), 0);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        herald_user *user = NULL;
        char *token;

        if (cases[i].role_json)
            token = sign_hs256(claims_fmt("{\"sub\":\"u1\",\"exp\":%ld,\"role\":%s}",
                                          (long)NOW + 600, cases[i].role_json));
        else
            token = sign_hs256(VALID_CLAIMS);
        CHECK_INT(jwt_auth_verify(&auth, token, NOW, &user), JWT_AUTH_OK);
        if (user) {
            CHECK_INT(user->admin, cases[i].admin);
            if (cases[i].role)
                CHECK_STR(user->role, cases[i].role);
            else
                CHECK(user->role == NULL);
            CHECK(user->email == NULL);
        }
        herald_user_free(user);
        free(token);
    }
    jwt_auth_free(&auth);
}

static void test_garbage_tokens_malformed(void) {
    static const char *cases[] = {
        "",
        "a.b",
        "....",
        "..",
        "a..c",
        ".b.c",
        "abc",
        "a.b.c.d",
        "eyJh bGciOiJIUzI1NiJ9.e30.sig",
        "eyJhbGciOiJIUzI1NiJ9.e30.sig=",
        "eyJhbGciOiJIUzI1NiJ9.e30.si+g",
        "YWJj.YWJj.YWJj",                 /* "abc": not JSON */
        "WzFd.e30.c2ln",                  /* header is [1], not an object */
        "eyJhbGciOiJIUzI1NiJ9.WzFd.c2ln", /* payload is [1] */
        "eyJhbGciOiJIUzI1NiJ9.e.c2ln",    /* payload of impossible base64 length */
    };
    struct jwt_auth auth;
    herald_user *user = (herald_user *)&auth; /* must be reset to NULL */
    char *big;
    size_t i;

    CHECK_INT(init_hs(&auth, "HS256"), 0);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum jwt_auth_result rc = jwt_auth_verify(&auth, cases[i], NOW, &user);

        if (rc != JWT_AUTH_MALFORMED) fprintf(stderr, "  token \"%s\"\n", cases[i]);
        CHECK_INT(rc, JWT_AUTH_MALFORMED);
        CHECK(user == NULL);
    }
    CHECK_INT(jwt_auth_verify(&auth, NULL, NOW, &user), JWT_AUTH_MALFORMED);

    big = malloc(10 * 1024 + 1);
    memset(big, 'A', 10 * 1024);
    big[10] = '.';
    big[20] = '.';
    big[10 * 1024] = '\0';
    CHECK_INT(jwt_auth_verify(&auth, big, NOW, &user), JWT_AUTH_MALFORMED);
    free(big);
    jwt_auth_free(&auth);
}

static void test_token_length_limit_is_inclusive(void) {
    struct jwt_auth auth;
    char *token, *padded;
    size_t len, pad;

    /* Pad a claim so the whole token is exactly JWT_AUTH_MAX_TOKEN bytes. */
    CHECK_INT(init_hs(&auth, "HS256"), 0);
    token = sign_hs256(claims_fmt("{\"sub\":\"u1\",\"exp\":%ld,\"pad\":\"\"}", (long)NOW + 600));
    len = strlen(token);
    free(token);
    pad = (JWT_AUTH_MAX_TOKEN - len) / 4 * 3;
    padded = malloc(pad + 128);
    snprintf(padded, pad + 128, "{\"sub\":\"u1\",\"exp\":%ld,\"pad\":\"%0*d\"}", (long)NOW + 600,
             (int)pad, 0);
    for (;;) {
        token = sign_hs256(padded);
        len = strlen(token);
        if (len >= JWT_AUTH_MAX_TOKEN) break;
        free(token);
        strcpy(padded + strlen(padded) - 2, "0\"}");
    }
    /* Reachable: only the payload grows, and HS256's header and signature
     * leave it a length base64url can have. */
    CHECK_INT(len, JWT_AUTH_MAX_TOKEN);
    CHECK_INT(verify_and_free(&auth, token), JWT_AUTH_OK);
    strcpy(padded + strlen(padded) - 2, "0\"}");
    token = sign_hs256(padded);
    CHECK(strlen(token) > JWT_AUTH_MAX_TOKEN);
    CHECK_INT(verify_and_free(&auth, token), JWT_AUTH_MALFORMED);
    free(padded);
    jwt_auth_free(&auth);
}

static void test_init_defaults_and_copies(void) {
    struct jwt_auth auth;
    char err[256], issuer[] = "iss-1", audience[] = "aud-1";

    CHECK_INT(jwt_auth_init(&auth, "RS384", NULL, rsa_key.public_path, issuer, audience, err,
                            sizeof(err)),
              0);
    CHECK_INT(auth.alg, JWT_ALG_RS384);
    CHECK_INT(auth.leeway, JWT_AUTH_DEFAULT_LEEWAY);
    CHECK(auth.require_exp);
    CHECK_INT(auth.key_len, strlen(rsa_key.public_pem));
    CHECK(auth.key && memcmp(auth.key, rsa_key.public_pem, auth.key_len) == 0);
    issuer[0] = audience[0] = 'X'; /* the settings own their copies */
    CHECK_STR(auth.issuer, "iss-1");
    CHECK_STR(auth.audience, "aud-1");
    jwt_auth_free(&auth);
    CHECK(auth.key == NULL && auth.issuer == NULL);
    jwt_auth_free(&auth); /* twice is harmless */

    CHECK_INT(jwt_auth_init(&auth, "HS512", SECRET, NULL, "", "", err, sizeof(err)), 0);
    CHECK(auth.issuer == NULL && auth.audience == NULL);
    CHECK_INT(auth.key_len, strlen(SECRET));
    jwt_auth_free(&auth);
}

static void test_init_errors_return_minus_one_with_reason(void) {
    char garbage_path[64], private_path[64];
    static const char garbage[] = "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n"
                                  "-----END PUBLIC KEY-----\n";
    struct {
        const char *alg, *secret, *key_file;
        const char *reason_word; /* a word the message must contain */
    } cases[] = {
        {"HS257", SECRET, NULL, "unknown"},
        {"none", NULL, NULL, "unknown"},
        {"hs256", SECRET, NULL, "unknown"},
        {NULL, SECRET, NULL, "unknown"},
        {"HS256", NULL, NULL, "secret"},
        {"HS256", "", NULL, "secret"},
        {"HS256", SECRET, rsa_key.public_path, "--jwt-key"},
        {"RS256", NULL, NULL, "--jwt-key"},
        {"RS256", SECRET, rsa_key.public_path, "secret"},
        {"ES256", SECRET, NULL, "secret"},
        {"RS256", NULL, "/nonexistent/herald/key.pem", "cannot read"},
        {"RS256", NULL, "/tmp", "cannot read"},
        {"RS256", NULL, garbage_path, "not a PEM public key"},
        {"RS256", NULL, private_path, "private key"},
        {"RS256", NULL, ec256_key.public_path, "not an RSA"},
        {"ES256", NULL, rsa_key.public_path, "not an EC"},
        {"ES256", NULL, ec384_key.public_path, "prime256v1"},
        {"ES512", NULL, ec256_key.public_path, "secp521r1"},
    };
    size_t i;

    CHECK_INT(write_temp_file(garbage, strlen(garbage), garbage_path), 0);
    CHECK_INT(write_temp_file(rsa_key.private_pem, strlen(rsa_key.private_pem), private_path), 0);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct jwt_auth auth;
        char err[256] = "";
        int rc = jwt_auth_init(&auth, cases[i].alg, cases[i].secret, cases[i].key_file, NULL, NULL,
                               err, sizeof(err));

        if (rc != -1 || !strstr(err, cases[i].reason_word))
            fprintf(stderr, "  case %zu (%s): rc %d, err \"%s\"\n", i,
                    cases[i].alg ? cases[i].alg : "NULL", rc, err);
        CHECK_INT(rc, -1);
        CHECK(strstr(err, cases[i].reason_word) != NULL);
        CHECK(strstr(err, SECRET) == NULL);
        CHECK(auth.key == NULL);
    }
    unlink(garbage_path);
    unlink(private_path);
}

static void test_result_names_and_reasons(void) {
    static const struct {
        enum jwt_auth_result result;
        const char *name;
    } cases[] = {
        {JWT_AUTH_OK, "ok"},
        {JWT_AUTH_MALFORMED, "malformed"},
        {JWT_AUTH_BAD_ALG, "bad_alg"},
        {JWT_AUTH_BAD_SIGNATURE, "bad_signature"},
        {JWT_AUTH_EXPIRED, "expired"},
        {JWT_AUTH_NOT_YET_VALID, "not_yet_valid"},
        {JWT_AUTH_MISSING_EXP, "missing_exp"},
        {JWT_AUTH_BAD_ISSUER, "bad_issuer"},
        {JWT_AUTH_BAD_AUDIENCE, "bad_audience"},
        {JWT_AUTH_NO_SUBJECT, "no_subject"},
        {JWT_AUTH_BAD_USER_ID, "bad_user_id"},
        {JWT_AUTH_NO_MEMORY, "no_memory"},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK_STR(jwt_auth_result_name(cases[i].result), cases[i].name);
        CHECK(jwt_auth_reason(cases[i].result) != NULL && *jwt_auth_reason(cases[i].result));
    }
    CHECK_STR(jwt_auth_reason(JWT_AUTH_EXPIRED), "Token expired");
    CHECK_STR(jwt_auth_reason(JWT_AUTH_BAD_SIGNATURE), "Invalid token signature");
    CHECK_STR(jwt_auth_reason(JWT_AUTH_BAD_ALG), "Token algorithm not allowed");
    CHECK(jwt_auth_result_name((enum jwt_auth_result) - 99) != NULL);
    CHECK(jwt_auth_reason((enum jwt_auth_result)5) != NULL);
}

int main(void) {
    if (make_key(&rsa_key, "RSA", NULL) < 0 || make_key(&rsa_other_key, "RSA", NULL) < 0 ||
        make_key(&ec256_key, "EC", "P-256") < 0 || make_key(&ec384_key, "EC", "P-384") < 0 ||
        make_key(&ec521_key, "EC", "P-521") < 0) {
        fprintf(stderr, "key generation failed\n");
        return 1;
    }

    RUN(test_hs256_token_gives_user_with_claims);
    RUN(test_all_nine_algorithms_verify_their_own_tokens);
    RUN(test_libjwt_es_signatures_are_jose_raw_r_s);
    RUN(test_time_claims_table);
    RUN(test_missing_exp_refused_unless_not_required);
    RUN(test_signer_table);
    RUN(test_header_table);
    RUN(test_issuer_table);
    RUN(test_audience_string_or_array_must_contain_configured);
    RUN(test_user_id_from_userid_then_sub);
    RUN(test_role_admin_makes_admin);
    RUN(test_garbage_tokens_malformed);
    RUN(test_token_length_limit_is_inclusive);
    RUN(test_init_defaults_and_copies);
    RUN(test_init_errors_return_minus_one_with_reason);
    RUN(test_result_names_and_reasons);

    free_key(&rsa_key);
    free_key(&rsa_other_key);
    free_key(&ec256_key);
    free_key(&ec384_key);
    free_key(&ec521_key);
    return TEST_SUMMARY();
}
