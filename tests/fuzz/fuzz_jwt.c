/* fuzz_jwt.c -- libFuzzer target for JWT verification (jwt_auth_verify), the
 * other pre-authentication parser of attacker bytes.
 *
 * Settings: HS256 with a fixed secret, at a fixed time. An input starting with
 * '{' is JSON to be signed: "HEADER\nCLAIMS", or CLAIMS alone under the header
 * {"alg":"HS256","typ":"JWT"}; it is base64url-encoded and signed here with
 * the secret, so the claim checks are reached. Any other input is a token as
 * is. Besides memory safety and leaks it checks the contract: the result is one
 * of the module's own, with a name and a reason; a user comes back exactly on
 * success, with a non-empty user id that maps to a valid channel name, and a
 * logged user id is one line. */
#include "acl.h"
#include "jwt_auth.h"
#include "log.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_SECRET "herald-fuzz-secret"
#define FUZZ_NOW    ((time_t)1700000000)
#define FUZZ_MAX    (JWT_AUTH_MAX_TOKEN + 64) /* a little over the limit is still tried */

static void require(int cond) {
    if (!cond) abort();
}

/* Appends the base64url form of data[0..len) at out (room for 4*(len+2)/3+1). */
static size_t base64url(const uint8_t *data, size_t len, char *out) {
    int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    size_t j = 0;

    for (int i = 0; i < n; i++) {
        if (out[i] == '=') continue;
        out[j++] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    }
    out[j] = '\0';
    return j;
}

/* Builds a signed token from "HEADER\nCLAIMS" or "CLAIMS" (caller frees). */
static char *signed_token(const uint8_t *data, size_t size) {
    static const char default_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    const uint8_t *header = (const uint8_t *)default_header, *claims = data;
    size_t header_len = sizeof default_header - 1, claims_len = size;
    const uint8_t *nl = memchr(data, '\n', size);

    if (nl) {
        header = data;
        header_len = (size_t)(nl - data);
        claims = nl + 1;
        claims_len = size - header_len - 1;
    }
    char *token = malloc(4 * (header_len + claims_len + 4) / 3 + 128);
    require(token != NULL);
    size_t len = base64url(header, header_len, token);
    token[len++] = '.';
    len += base64url(claims, claims_len, token + len);

    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    require(HMAC(EVP_sha256(), FUZZ_SECRET, (int)strlen(FUZZ_SECRET), (unsigned char *)token, len,
                 mac, &mac_len) != NULL);
    token[len++] = '.';
    base64url(mac, mac_len, token + len);
    return token;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static struct jwt_auth auth;
    static int ready;

    if (!ready) {
        char err[256];
        require(jwt_auth_init(&auth, "HS256", FUZZ_SECRET, NULL, NULL, NULL, err, sizeof err) == 0);
        ready = 1;
    }
    if (size > FUZZ_MAX) return 0;

    char *token;
    if (size > 0 && data[0] == '{') {
        token = signed_token(data, size);
    } else {
        token = malloc(size + 1);
        require(token != NULL);
        memcpy(token, data, size);
        token[size] = '\0';
    }

    herald_user *user = (herald_user *)&auth; /* must be reset */
    enum jwt_auth_result result = jwt_auth_verify(&auth, token, FUZZ_NOW, &user);
    require(result <= JWT_AUTH_OK && result >= JWT_AUTH_NO_MEMORY);
    require(strcmp(jwt_auth_result_name(result), "unknown") != 0);
    require(jwt_auth_reason(result)[0] != '\0');
    require((result == JWT_AUTH_OK) == (user != NULL));
    if (user) {
        char channel[ACL_MAX_CHANNEL + 1];
        require(user->user_id != NULL && user->user_id[0] != '\0');
        require(user->admin == (user->role && strcmp(user->role, "admin") == 0));
        int n = acl_user_channel(user->user_id, channel, sizeof channel);
        require(n > 0 && (size_t)n == strlen(channel));
        require(acl_channel_name_valid(channel, (size_t)n));
        require(acl_may_subscribe(acl_default_rules(), user, channel) == ACL_ALLOW);
        const char *quoted = log_q(user->user_id);
        for (const char *p = quoted; *p; p++) require((unsigned char)*p >= 0x20 && *p != 0x7f);
        herald_user_free(user);
    }
    free(token);
    return 0;
}
