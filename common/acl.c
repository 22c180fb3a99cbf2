/* acl.c -- channel-name rules and the subscribe ACL as pure functions. */
#include "acl.h"

#include <string.h>

static const struct acl_rule default_rules[] = {
    {"announcements", false, ACL_PUBLIC},
    {"apps", true, ACL_AUTHENTICATED},
    {"users", true, ACL_AUTHENTICATED},
    {"database", true, ACL_AUTHENTICATED},
    {"deployments", true, ACL_AUTHENTICATED},
    {"storage", true, ACL_AUTHENTICATED},
    {"user", true, ACL_OWNER},
    {"system", true, ACL_ADMIN},
};

static const char *const default_known[] = {
    "apps:created", "apps:updated", "apps:deleted", "apps:deployed", "apps:status",
    "users:created", "users:updated", "users:deleted",
    "user:", /* user:<own id> */
    "database:table_created", "database:table_updated", "database:table_deleted",
    "database:row_updated",
    "deployments:started", "deployments:completed", "deployments:failed", "deployments:status",
    "storage:uploaded", "storage:deleted", "storage:updated",
    "system:health", "system:metrics", "system:alerts",
    "announcements",
};

static const struct acl_rules defaults = {
    default_rules, sizeof default_rules / sizeof default_rules[0],
    default_known, sizeof default_known / sizeof default_known[0],
};

const struct acl_rules *acl_default_rules(void) {
    return &defaults;
}

bool acl_channel_name_valid(const char *name, size_t len) {
    if (len == 0 || len > ACL_MAX_CHANNEL) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == ':' || c == '-';
        if (!ok) return false;
    }
    return true;
}

/* The rule covering channel: an exact name, or "<namespace>:<non-empty rest>". */
static const struct acl_rule *find_rule(const struct acl_rules *rules, const char *channel) {
    for (size_t i = 0; i < rules->count; i++) {
        const struct acl_rule *r = &rules->rules[i];
        size_t n = strlen(r->pattern);
        if (!r->is_namespace) {
            if (strcmp(channel, r->pattern) == 0) return r;
        } else if (strncmp(channel, r->pattern, n) == 0 && channel[n] == ':' &&
                   channel[n + 1] != '\0') {
            return r;
        }
    }
    return NULL;
}

static bool access_granted(enum acl_access access, const herald_user *user, const char *rest) {
    switch (access) {
    case ACL_PUBLIC: return true;
    case ACL_AUTHENTICATED: return user != NULL;
    case ACL_OWNER: return user != NULL && (user->admin || strcmp(rest, user->user_id) == 0);
    case ACL_ADMIN: return user != NULL && user->admin;
    }
    return false;
}

enum acl_result acl_may_subscribe(const struct acl_rules *rules, const herald_user *user,
                                  const char *channel) {
    if (!acl_channel_name_valid(channel, strlen(channel))) return ACL_INVALID_NAME;
    const struct acl_rule *r = find_rule(rules, channel);
    if (!r) return ACL_UNKNOWN_CHANNEL;
    const char *rest = r->is_namespace ? channel + strlen(r->pattern) + 1 : "";
    return access_granted(r->access, user, rest) ? ACL_ALLOW : ACL_FORBIDDEN;
}

int acl_each_authorized(const struct acl_rules *rules, const herald_user *user,
                        int (*fn)(const char *channel, void *arg), void *arg) {
    char own[ACL_MAX_CHANNEL + 1];
    int calls = 0;
    for (size_t i = 0; i < rules->known_count; i++) {
        const char *name = rules->known[i];
        size_t n = strlen(name);
        if (n > 0 && name[n - 1] == ':') { /* a per-user namespace: the user's own channel */
            if (!user) continue;
            size_t id_len = strlen(user->user_id);
            if (n + id_len > ACL_MAX_CHANNEL) continue;
            memcpy(own, name, n);
            memcpy(own + n, user->user_id, id_len + 1);
            name = own;
        }
        if (acl_may_subscribe(rules, user, name) != ACL_ALLOW) continue;
        int rc = fn(name, arg);
        if (rc < 0) return rc;
        calls++;
    }
    return calls;
}
