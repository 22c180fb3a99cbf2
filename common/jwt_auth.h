/* jwt_auth.h -- verifying a JWT into a Herald user.
 *
 * Built on libjwt. The algorithm is pinned to the configured one: the token's
 * header is read first and any other "alg" (none included, and an HMAC token
 * against an RSA/EC public key) is refused before libjwt sees a key. Then the
 * signature, exp (required unless configured otherwise), nbf, iss and aud are
 * checked with a leeway. exp, nbf and iat are NumericDates (RFC 7519 2): any
 * JSON number, fractions included. The user id is "userId" when that claim is
 * present, else "sub"; the claim used must be a non-empty string, or the token
 * is refused. Knows nothing of sockets or channels. */
#ifndef HERALD_JWT_AUTH_H
#define HERALD_JWT_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define JWT_AUTH_DEFAULT_LEEWAY 30
#define JWT_AUTH_MAX_TOKEN      8192 /* longer tokens are refused without parsing */

/* An authenticated user. All strings are owned by the struct (herald_user_free). */
typedef struct {
    char *user_id; /* from "userId", else (userId absent) "sub"; never NULL or empty */
    char *email;   /* NULL when absent */
    char *role;    /* NULL when absent */
    bool admin;    /* role == "admin" */
    int64_t exp;   /* expiry in whole seconds since the epoch (a fractional exp rounded down,
                      clamped to int64_t), 0 when the token has none */
} herald_user;

void herald_user_free(herald_user *user);

/* Verification settings. Owns key (freed by jwt_auth_free). */
struct jwt_auth {
    int alg;            /* a jwt_alg_t from <jwt.h> */
    unsigned char *key; /* HMAC secret or PEM public key bytes */
    size_t key_len;
    char *issuer;   /* required "iss" when not NULL */
    char *audience; /* required in "aud" (string or array) when not NULL */
    int leeway;     /* seconds allowed for clock skew on exp/nbf */
    bool require_exp;
};

/* Loads settings: alg_name as "HS256" ... "ES512"; HS* take secret, RS* and ES* take
 * the path of a PEM public key. On failure returns -1 and writes a human reason
 * into err (which the caller prints before exiting with status 2). */
int jwt_auth_init(struct jwt_auth *auth, const char *alg_name, const char *secret,
                  const char *key_file, const char *issuer, const char *audience, char *err,
                  size_t err_size);
void jwt_auth_free(struct jwt_auth *auth);

enum jwt_auth_result {
    JWT_AUTH_OK = 0,
    JWT_AUTH_MALFORMED = -1, /* not three base64url parts, bad JSON, too long */
    JWT_AUTH_BAD_ALG = -2,   /* header alg differs from the pinned one */
    JWT_AUTH_BAD_SIGNATURE = -3,
    JWT_AUTH_EXPIRED = -4,
    JWT_AUTH_NOT_YET_VALID = -5, /* nbf in the future */
    JWT_AUTH_MISSING_EXP = -6,
    JWT_AUTH_BAD_ISSUER = -7,
    JWT_AUTH_BAD_AUDIENCE = -8,
    JWT_AUTH_NO_SUBJECT = -9,   /* neither userId nor sub */
    JWT_AUTH_BAD_USER_ID = -10, /* userId (or, without userId, sub) present but not a
                                   non-empty string */
    JWT_AUTH_NO_MEMORY = -11,   /* the last result: metrics count -1 .. -JWT_AUTH_NO_MEMORY */
};

/* Verifies token at time now. On JWT_AUTH_OK, *user is a new user the caller
 * frees with herald_user_free. */
enum jwt_auth_result jwt_auth_verify(const struct jwt_auth *auth, const char *token, time_t now,
                                     herald_user **user);

/* A short human reason for a result ("token expired", ...): static storage. */
const char *jwt_auth_reason(enum jwt_auth_result result);

/* A stable machine name for a result ("expired", "bad_signature", ...), used in
 * metrics labels and logs. */
const char *jwt_auth_result_name(enum jwt_auth_result result);

#endif
