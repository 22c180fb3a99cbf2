/* herald_token.c -- herald-token, the operator tool that mints a JWT for a user.
 *
 * Signs with libjwt: an HMAC secret (--secret, else $HERALD_JWT_SECRET so it
 * need not appear in a process listing) for HS*, a PEM private key file for
 * RS* and ES*. Prints the token and a newline on stdout; bad usage exits 2,
 * a signing failure exits 1. The secret and the token are never logged. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#define TOKEN_EXIT_USAGE   2
#define TOKEN_MAX_KEY_FILE (1024 * 1024)
#define TOKEN_MAX_TTL      315360000L    /* ten years */
#define TOKEN_MAX_TIME     253402300799L /* 9999-12-31T23:59:59Z */

struct token_options {
    const char *alg_name;
    const char *secret;
    const char *private_key_file;
    const char *user;
    const char *email;
    const char *role;
    const char *issuer;
    const char *audience;
    long ttl;
    long nbf;
    bool has_nbf;
    bool no_exp;
};

static void usage(FILE *out) {
    fprintf(out,
            "usage: herald-token [--alg HS256] (--secret S | --private-key FILE) --user ID\n"
            "                    [--email E] [--role R] [--ttl SECONDS] [--issuer I]\n"
            "                    [--audience A] [--nbf UNIX_TIME] [--no-exp]\n"
            "\n"
            "Prints a signed JWT for user ID (claims sub and userId) on stdout.\n"
            "  --alg A             HS256 HS384 HS512 RS256 RS384 RS512 ES256 ES384 ES512\n"
            "                      (default HS256)\n"
            "  --secret S          HMAC secret for HS*; default $HERALD_JWT_SECRET\n"
            "  --private-key FILE  PEM private key for RS* and ES*\n"
            "  --ttl SECONDS       exp = now + SECONDS, 1 to 315360000 (default 3600)\n"
            "  --no-exp            omit exp (only accepted by gateways that do not require it)\n"
            "  --nbf UNIX_TIME     not-before time, 0 to 253402300799\n"
            "  --email, --role, --issuer, --audience   the email, role, iss and aud claims\n");
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...) {
    va_list ap;

    fputs("herald-token: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n(herald-token --help for usage)\n", stderr);
    return TOKEN_EXIT_USAGE;
}

/* A decimal integer in [min, max]: no sign, no trailing text, no overflow. */
static int parse_long(const char *s, long min, long max, long *out) {
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || *s == '+' || v < min || v > max) return -1;
    *out = v;
    return 0;
}

/* Reads a whole file into a new NUL-terminated buffer (caller frees). */
static unsigned char *read_key_file(const char *path, size_t *len_out) {
    FILE *fp = fopen(path, "rb");
    unsigned char *buf;
    size_t len;

    if (!fp) return NULL;
    buf = malloc(TOKEN_MAX_KEY_FILE + 1);
    if (!buf) {
        fclose(fp);
        return NULL;
    }
    len = fread(buf, 1, TOKEN_MAX_KEY_FILE + 1, fp);
    if (ferror(fp) || len > TOKEN_MAX_KEY_FILE) {
        if (!ferror(fp)) errno = EFBIG;
        OPENSSL_cleanse(buf, len);
        free(buf);
        fclose(fp);
        return NULL;
    }
    fclose(fp);
    buf[len] = '\0';
    *len_out = len;
    return buf;
}

/* libjwt 1.10 signs ES256 with a P-384 key without complaint (yielding a
 * token no JOSE verifier accepts), so check the key's type and curve first. */
static int check_private_key(jwt_alg_t alg, const unsigned char *pem, size_t pem_len,
                             const char *path) {
    const char *curve = alg == JWT_ALG_ES256   ? "prime256v1"
                        : alg == JWT_ALG_ES384 ? "secp384r1"
                        : alg == JWT_ALG_ES512 ? "secp521r1"
                                               : NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
    EVP_PKEY *pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    char group[64] = "";
    size_t group_len;
    int rc = -1;

    if (!pkey)
        fprintf(stderr, "herald-token: --private-key %s is not an unencrypted PEM private key\n",
                path);
    else if (!curve && !EVP_PKEY_is_a(pkey, "RSA"))
        fprintf(stderr, "herald-token: %s needs an RSA key; %s is not one\n", jwt_alg_str(alg),
                path);
    else if (curve && (!EVP_PKEY_is_a(pkey, "EC") ||
                       !EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                                       sizeof(group), &group_len) ||
                       strcmp(group, curve) != 0))
        fprintf(stderr, "herald-token: %s needs an EC key on curve %s; %s is not one\n",
                jwt_alg_str(alg), curve, path);
    else
        rc = 0;
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    return rc;
}

/* Parses argv into opts. Returns -1 to continue, else the exit status. */
static int parse_options(int argc, char **argv, struct token_options *opts) {
    static const struct option longopts[] = {
        {"alg", required_argument, NULL, 'a'},
        {"secret", required_argument, NULL, 's'},
        {"private-key", required_argument, NULL, 'k'},
        {"user", required_argument, NULL, 'u'},
        {"email", required_argument, NULL, 'e'},
        {"role", required_argument, NULL, 'r'},
        {"ttl", required_argument, NULL, 't'},
        {"issuer", required_argument, NULL, 'i'},
        {"audience", required_argument, NULL, 'A'},
        {"nbf", required_argument, NULL, 'n'},
        {"no-exp", no_argument, NULL, 'X'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
            case 'a': opts->alg_name = optarg; break;
            case 's': opts->secret = optarg; break;
            case 'k': opts->private_key_file = optarg; break;
            case 'u': opts->user = optarg; break;
            case 'e': opts->email = optarg; break;
            case 'r': opts->role = optarg; break;
            case 'i': opts->issuer = optarg; break;
            case 'A': opts->audience = optarg; break;
            case 'X': opts->no_exp = true; break;
            case 't':
                if (parse_long(optarg, 1, TOKEN_MAX_TTL, &opts->ttl) < 0)
                    return usage_error("--ttl wants seconds from 1 to %ld (ten years), not \"%s\"",
                                       TOKEN_MAX_TTL, optarg);
                break;
            case 'n':
                if (parse_long(optarg, 0, TOKEN_MAX_TIME, &opts->nbf) < 0)
                    return usage_error("--nbf wants a Unix time in seconds from 0 to %ld "
                                       "(year 9999), not \"%s\"",
                                       TOKEN_MAX_TIME, optarg);
                opts->has_nbf = true;
                break;
            case 'h': usage(stdout); return 0;
            default:
                return usage_error("unknown or incomplete option %s",
                                   argv[optind - 1] ? argv[optind - 1] : "");
        }
    }
    if (optind < argc) return usage_error("unexpected argument \"%s\"", argv[optind]);
    if (!opts->user || !*opts->user) return usage_error("%s", "--user ID is required");
    return -1;
}

/* Builds and signs the token; returns it (caller frees) or NULL after
 * printing why. */
static char *make_token(const struct token_options *opts, jwt_alg_t alg, const unsigned char *key,
                        size_t key_len) {
    time_t now = time(NULL);
    jwt_t *jwt = NULL;
    char *token = NULL;
    int rc;

    if ((rc = jwt_new(&jwt)) != 0) goto fail;
    if ((rc = jwt_add_grant(jwt, "sub", opts->user)) != 0 ||
        (rc = jwt_add_grant(jwt, "userId", opts->user)) != 0 ||
        (rc = jwt_add_grant_int(jwt, "iat", (long)now)) != 0)
        goto fail;
    if (!opts->no_exp && (rc = jwt_add_grant_int(jwt, "exp", (long)now + opts->ttl)) != 0)
        goto fail;
    if (opts->email && (rc = jwt_add_grant(jwt, "email", opts->email)) != 0) goto fail;
    if (opts->role && (rc = jwt_add_grant(jwt, "role", opts->role)) != 0) goto fail;
    if (opts->issuer && (rc = jwt_add_grant(jwt, "iss", opts->issuer)) != 0) goto fail;
    if (opts->audience && (rc = jwt_add_grant(jwt, "aud", opts->audience)) != 0) goto fail;
    if (opts->has_nbf && (rc = jwt_add_grant_int(jwt, "nbf", opts->nbf)) != 0) goto fail;
    if ((rc = jwt_set_alg(jwt, alg, key, (int)key_len)) != 0) goto fail;

    token = jwt_encode_str(jwt);
    if (!token) {
        rc = errno ? errno : EINVAL;
        fprintf(stderr, "herald-token: signing failed (%s)%s\n", strerror(rc),
                alg >= JWT_ALG_RS256 ? "; is --private-key a PEM private key for this --alg?" : "");
    }
    jwt_free(jwt);
    return token;

fail:
    fprintf(stderr, "herald-token: building the token failed: %s\n", strerror(rc));
    jwt_free(jwt);
    return NULL;
}

int main(int argc, char **argv) {
    struct token_options opts = {.alg_name = "HS256", .ttl = 3600};
    unsigned char *key = NULL;
    size_t key_len = 0;
    jwt_alg_t alg;
    char *token;
    int status;

    status = parse_options(argc, argv, &opts);
    if (status >= 0) return status;
    if (opts.ttl > LONG_MAX - (long)time(NULL))
        return usage_error("--ttl %ld puts exp past the end of time", opts.ttl);

    alg = jwt_str_alg(opts.alg_name);
    /* jwt_str_alg also knows "none" and may ignore case; accept exactly our nine. */
    if (alg == JWT_ALG_INVAL || alg == JWT_ALG_NONE || strcmp(jwt_alg_str(alg), opts.alg_name))
        return usage_error("unknown --alg \"%s\" (HS256/384/512, RS256/384/512, ES256/384/512)",
                           opts.alg_name);

    if (alg <= JWT_ALG_HS512) {
        if (opts.private_key_file)
            return usage_error("--private-key is for RS* and ES*; %s takes --secret",
                               opts.alg_name);
        if (!opts.secret) opts.secret = getenv("HERALD_JWT_SECRET");
        if (!opts.secret || !*opts.secret)
            return usage_error("%s needs --secret S or $HERALD_JWT_SECRET", opts.alg_name);
        key_len = strlen(opts.secret);
        key = (unsigned char *)strdup(opts.secret);
        if (!key) {
            fprintf(stderr, "herald-token: out of memory\n");
            return 1;
        }
    } else {
        if (opts.secret)
            return usage_error("--secret is for HS*; %s takes --private-key FILE", opts.alg_name);
        if (!opts.private_key_file)
            return usage_error("%s needs --private-key FILE (a PEM private key)", opts.alg_name);
        key = read_key_file(opts.private_key_file, &key_len);
        if (!key) {
            fprintf(stderr, "herald-token: cannot read --private-key %s: %s\n",
                    opts.private_key_file, strerror(errno));
            return TOKEN_EXIT_USAGE;
        }
        if (check_private_key(alg, key, key_len, opts.private_key_file) < 0) {
            OPENSSL_cleanse(key, key_len);
            free(key);
            return TOKEN_EXIT_USAGE;
        }
    }

    token = make_token(&opts, alg, key, key_len);
    OPENSSL_cleanse(key, key_len);
    free(key);
    if (!token) return 1;
    status = printf("%s\n", token) < 0 || fflush(stdout) != 0 ? 1 : 0;
    OPENSSL_cleanse(token, strlen(token));
    free(token);
    return status;
}
