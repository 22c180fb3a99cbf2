/* acl.h -- channel names and who may subscribe to them.
 *
 * Pure functions of (user, channel): no I/O, no state besides the rules table
 * the caller passes. The defaults are DESIGN.md's table: "announcements" for
 * everyone, apps/users/database/deployments/storage for any authenticated
 * user, the user's own channel (acl_user_channel) for that user or an admin,
 * system:* for admins only, and nothing else. */
#ifndef HERALD_ACL_H
#define HERALD_ACL_H

#include <stdbool.h>
#include <stddef.h>

#include "jwt_auth.h"

#define ACL_MAX_CHANNEL 128    /* bytes, inclusive */
#define ACL_HASH_SUFFIX "hash" /* an owner namespace NS also owns NShash:<sha256 hex> */

enum acl_access {
    ACL_PUBLIC,        /* anyone, anonymous included */
    ACL_AUTHENTICATED, /* any authenticated user */
    ACL_OWNER,         /* NS:<id> or NShash:<hex>, as acl_owner_channel maps: that user, or an
                          admin */
    ACL_ADMIN,         /* admins only */
};

/* Whether a rule's channels keep history (see history.h). Zero, the value of
 * a rule that does not say, means the publisher's defaults. */
enum acl_history {
    ACL_HISTORY_DEFAULT = 0, /* the publisher's size and ttl */
    ACL_HISTORY_ON,          /* "history":{...}: size/ttl where set, else the defaults */
    ACL_HISTORY_OFF,         /* "history":false */
};

/* One rule: a whole channel name ("announcements") or a namespace ("apps",
 * matching "apps:<anything>"). */
struct acl_rule {
    const char *pattern;
    bool is_namespace;
    enum acl_access access;
    enum acl_history history;
    unsigned long history_size; /* entries; 0: the default */
    unsigned long history_ttl;  /* seconds; 0: the default */
};

struct acl_rules {
    const struct acl_rule *rules;
    size_t count;
    const char *const *known; /* the channel names listed to clients; "NS:" means the user's
                                 own channel in owner namespace NS (acl_owner_channel) */
    size_t known_count;
};

/* The default rules of DESIGN.md (static storage). */
const struct acl_rules *acl_default_rules(void);

/* Loads rules from a JSON file:
 *   {"rules":[{"channel":"announcements","access":"public"},
 *             {"namespace":"apps","access":"authenticated"}, ...],
 *    "known":["apps:created","user:","announcements"]}
 * access is public, authenticated, owner or admin. A rule may add
 * "history":{"size":N,"ttl":S} (either field optional; 1..HISTORY_MAX_SIZE
 * entries, 1..HISTORY_MAX_TTL seconds) or "history":false. Returns new rules (free with
 * acl_rules_free), or NULL with a reason in err. */
struct acl_rules *acl_rules_load(const char *path, char *err, size_t err_size);
void acl_rules_free(struct acl_rules *rules);

enum acl_result {
    ACL_ALLOW = 0,
    ACL_FORBIDDEN,       /* a known channel this user may not use */
    ACL_UNKNOWN_CHANNEL, /* no rule matches */
    ACL_INVALID_NAME,    /* empty, over 128 bytes, or characters outside [A-Za-z0-9_.:-] */
};

/* True when name[0..len) is a syntactically valid channel name. */
bool acl_channel_name_valid(const char *name, size_t len);

/* May user (NULL: anonymous) subscribe to channel (NUL-terminated)? */
enum acl_result acl_may_subscribe(const struct acl_rules *rules, const herald_user *user,
                                  const char *channel);

/* The channel a user owns in owner namespace ns, written NUL-terminated to out:
 *   - "<ns>:<id>" when id is made only of channel-name characters [A-Za-z0-9_.:-]
 *     and the result fits in ACL_MAX_CHANNEL bytes;
 *   - otherwise "<ns>hash:<64 lowercase hex of SHA-256(id)>".
 * The mapping is injective: plain ids are kept as they are, every other id lands
 * in the separate "<ns>hash" namespace, which no plain id can reach. Returns the
 * length written, or -1 when out is too small, the result would be over
 * ACL_MAX_CHANNEL, or hashing failed. */
int acl_owner_channel(const char *ns, const char *user_id, char *out, size_t size);

/* The user's own channel in the default "user" namespace: "user:<id>" or
 * "userhash:<hex>" (acl_owner_channel("user", ...)). out needs ACL_MAX_CHANNEL + 1
 * bytes. Publishers compute a user's channel with this (herald-pub --user-channel). */
int acl_user_channel(const char *user_id, char *out, size_t size);

/* Calls fn for every known channel user may subscribe to, in table order, with
 * "NS:" expanded to the user's own channel in NS (acl_owner_channel). Returns the number of calls,
 * or the first negative value fn returned. */
int acl_each_authorized(const struct acl_rules *rules, const herald_user *user,
                        int (*fn)(const char *channel, void *arg), void *arg);

/* The history policy of channel: false when its rule says "history":false.
 * Otherwise true, with *size and *ttl (which hold the publisher's defaults on
 * entry, normally HISTORY_DEFAULT_SIZE/TTL) replaced by the values the rule
 * sets. The rule is the one acl_may_subscribe uses; a channel no rule covers
 * gets the defaults. */
bool acl_history_policy(const struct acl_rules *rules, const char *channel, unsigned long *size,
                        unsigned long *ttl);

#endif
