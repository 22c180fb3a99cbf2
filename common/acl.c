/* acl.c -- channel-name rules and the subscribe ACL as pure functions. */
#include "acl.h"

#include "history.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct acl_rule default_rules[] = {
    {.pattern = "announcements", .is_namespace = false, .access = ACL_PUBLIC},
    {.pattern = "apps", .is_namespace = true, .access = ACL_AUTHENTICATED},
    {.pattern = "users", .is_namespace = true, .access = ACL_AUTHENTICATED},
    {.pattern = "database", .is_namespace = true, .access = ACL_AUTHENTICATED},
    {.pattern = "deployments", .is_namespace = true, .access = ACL_AUTHENTICATED},
    {.pattern = "storage", .is_namespace = true, .access = ACL_AUTHENTICATED},
    {.pattern = "user", .is_namespace = true, .access = ACL_OWNER},
    {.pattern = "system", .is_namespace = true, .access = ACL_ADMIN},
};

static const char *const default_known[] = {
    "apps:created",
    "apps:updated",
    "apps:deleted",
    "apps:deployed",
    "apps:status",
    "users:created",
    "users:updated",
    "users:deleted",
    "user:", /* user:<own id> */
    "database:table_created",
    "database:table_updated",
    "database:table_deleted",
    "database:row_updated",
    "deployments:started",
    "deployments:completed",
    "deployments:failed",
    "deployments:status",
    "storage:uploaded",
    "storage:deleted",
    "storage:updated",
    "system:health",
    "system:metrics",
    "system:alerts",
    "announcements",
};

static const struct acl_rules defaults = {
    default_rules,
    sizeof default_rules / sizeof default_rules[0],
    default_known,
    sizeof default_known / sizeof default_known[0],
};

const struct acl_rules *acl_default_rules(void) {
    return &defaults;
}

static bool is_channel_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == ':' || c == '-';
}

bool acl_channel_name_valid(const char *name, size_t len) {
    if (len == 0 || len > ACL_MAX_CHANNEL) return false;
    for (size_t i = 0; i < len; i++)
        if (!is_channel_char((unsigned char)name[i])) return false;
    return true;
}

int acl_owner_channel(const char *ns, const char *user_id, char *out, size_t size) {
    size_t ns_len = strlen(ns), id_len = strlen(user_id);
    bool plain = id_len > 0 && ns_len + 1 + id_len <= ACL_MAX_CHANNEL;

    for (size_t i = 0; plain && i < id_len; i++) plain = is_channel_char((unsigned char)user_id[i]);
    if (plain) {
        if (ns_len + 1 + id_len + 1 > size) return -1;
        memcpy(out, ns, ns_len);
        out[ns_len] = ':';
        memcpy(out + ns_len + 1, user_id, id_len + 1);
        return (int)(ns_len + 1 + id_len);
    }

    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    size_t prefix = ns_len + sizeof ACL_HASH_SUFFIX - 1 + 1, len;

    if (EVP_Digest(user_id, id_len, md, &md_len, EVP_sha256(), NULL) != 1) return -1;
    len = prefix + 2 * (size_t)md_len;
    if (len > ACL_MAX_CHANNEL || len + 1 > size) return -1;
    snprintf(out, size, "%s" ACL_HASH_SUFFIX ":", ns);
    for (unsigned int i = 0; i < md_len; i++) {
        out[prefix + 2 * i] = hex[md[i] >> 4];
        out[prefix + 2 * i + 1] = hex[md[i] & 15];
    }
    out[len] = '\0';
    return (int)len;
}

int acl_user_channel(const char *user_id, char *out, size_t size) {
    return acl_owner_channel("user", user_id, out, size);
}

/* True when channel is "<prefix>:<non-empty rest>" for prefix[0..n). */
static bool in_namespace(const char *channel, const char *prefix, size_t n) {
    return strncmp(channel, prefix, n) == 0 && channel[n] == ':' && channel[n + 1] != '\0';
}

/* The rule covering channel: an exact name, "<namespace>:<non-empty rest>", or,
 * for an owner namespace, "<namespace>hash:<non-empty rest>". */
static const struct acl_rule *find_rule(const struct acl_rules *rules, const char *channel) {
    for (size_t i = 0; i < rules->count; i++) {
        const struct acl_rule *r = &rules->rules[i];
        size_t n = strlen(r->pattern);
        if (!r->is_namespace) {
            if (strcmp(channel, r->pattern) == 0) return r;
        } else if (in_namespace(channel, r->pattern, n)) {
            return r;
        } else if (r->access == ACL_OWNER && strncmp(channel, r->pattern, n) == 0 &&
                   in_namespace(channel + n, ACL_HASH_SUFFIX, sizeof ACL_HASH_SUFFIX - 1)) {
            return r;
        }
    }
    return NULL;
}

/* An owner channel belongs to the one user whose id maps to exactly that name,
 * so a plain id never reaches the hash namespace and no id reaches another's. */
static bool owns(const struct acl_rule *r, const herald_user *user, const char *channel) {
    char own[ACL_MAX_CHANNEL + 1];

    if (acl_owner_channel(r->pattern, user->user_id, own, sizeof own) < 0) return false;
    return strcmp(own, channel) == 0;
}

static bool access_granted(const struct acl_rule *r, const herald_user *user, const char *channel) {
    switch (r->access) {
        case ACL_PUBLIC: return true;
        case ACL_AUTHENTICATED: return user != NULL;
        case ACL_OWNER: return user != NULL && (user->admin || owns(r, user, channel));
        case ACL_ADMIN: return user != NULL && user->admin;
    }
    return false;
}

enum acl_result acl_may_subscribe(const struct acl_rules *rules, const herald_user *user,
                                  const char *channel) {
    if (!acl_channel_name_valid(channel, strlen(channel))) return ACL_INVALID_NAME;
    const struct acl_rule *r = find_rule(rules, channel);
    if (!r) return ACL_UNKNOWN_CHANNEL;
    return access_granted(r, user, channel) ? ACL_ALLOW : ACL_FORBIDDEN;
}

int acl_each_authorized(const struct acl_rules *rules, const herald_user *user,
                        int (*fn)(const char *channel, void *arg), void *arg) {
    char own[ACL_MAX_CHANNEL + 1], ns[ACL_MAX_CHANNEL + 1];
    int calls = 0;
    for (size_t i = 0; i < rules->known_count; i++) {
        const char *name = rules->known[i];
        size_t n = strlen(name);
        if (n > 0 && name[n - 1] == ':') { /* a per-user namespace: the user's own channel */
            if (!user) continue;
            memcpy(ns, name, n - 1);
            ns[n - 1] = '\0';
            if (acl_owner_channel(ns, user->user_id, own, sizeof own) < 0) continue;
            name = own;
        }
        if (acl_may_subscribe(rules, user, name) != ACL_ALLOW) continue;
        int rc = fn(name, arg);
        if (rc < 0) return rc;
        calls++;
    }
    return calls;
}

bool acl_history_policy(const struct acl_rules *rules, const char *channel, unsigned long *size,
                        unsigned long *ttl) {
    const struct acl_rule *r = rules ? find_rule(rules, channel) : NULL;

    if (!r) return true;
    if (r->history == ACL_HISTORY_OFF) return false;
    if (r->history_size) *size = r->history_size;
    if (r->history_ttl) *ttl = r->history_ttl;
    return true;
}

static const char *const access_names[] = {"public", "authenticated", "owner", "admin"};

void acl_rules_free(struct acl_rules *rules) {
    if (!rules) return;
    for (size_t i = 0; i < rules->count; i++) free((char *)rules->rules[i].pattern);
    for (size_t i = 0; i < rules->known_count; i++) free((char *)rules->known[i]);
    free((void *)rules->rules);
    free((void *)rules->known);
    free(rules);
}

/* Reads a rule's optional "history": false, or {"size":N,"ttl":S}. */
static int load_history(const json_t *history, struct acl_rule *rule, const char *pattern,
                        char *err, size_t err_size) {
    static const struct {
        const char *field;
        long max;
    } limits[] = {{"size", HISTORY_MAX_SIZE}, {"ttl", HISTORY_MAX_TTL}};
    unsigned long values[2] = {0, 0};

    if (!history) return 0;
    if (json_is_false(history)) {
        rule->history = ACL_HISTORY_OFF;
        return 0;
    }
    if (!json_is_object(history)) {
        snprintf(err, err_size, "rule '%s': \"history\" must be false or {\"size\":N,\"ttl\":S}",
                 pattern);
        return -1;
    }
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)history, key, value) {
        size_t i = 0;
        while (i < 2 && strcmp(key, limits[i].field) != 0) i++;
        if (i == 2) {
            snprintf(err, err_size, "rule '%s': unknown history field '%s' (size, ttl)", pattern,
                     key);
            return -1;
        }
        json_int_t n = json_is_integer(value) ? json_integer_value(value) : 0;
        if (n < 1 || n > limits[i].max) {
            snprintf(err, err_size, "rule '%s': history %s must be an integer from 1 to %ld",
                     pattern, key, limits[i].max);
            return -1;
        }
        values[i] = (unsigned long)n;
    }
    rule->history = ACL_HISTORY_ON;
    rule->history_size = values[0];
    rule->history_ttl = values[1];
    return 0;
}

static int load_rule(json_t *item, struct acl_rule *rule, char *err, size_t err_size) {
    const char *channel = json_string_value(json_object_get(item, "channel"));
    const char *ns = json_string_value(json_object_get(item, "namespace"));
    const char *access = json_string_value(json_object_get(item, "access"));
    if (!json_is_object(item) || (!channel == !ns) || !access) {
        snprintf(err, err_size, "each rule needs \"channel\" or \"namespace\", and \"access\"");
        return -1;
    }
    const char *pattern = channel ? channel : ns;
    if (!acl_channel_name_valid(pattern, strlen(pattern)) || (ns && strchr(ns, ':'))) {
        snprintf(err, err_size, "bad channel or namespace name '%s'", pattern);
        return -1;
    }
    size_t a = 0;
    while (a < 4 && strcmp(access, access_names[a]) != 0) a++;
    if (a == 4) {
        snprintf(err, err_size, "unknown access '%s' (public, authenticated, owner, admin)",
                 access);
        return -1;
    }
    if (load_history(json_object_get(item, "history"), rule, pattern, err, err_size) != 0)
        return -1;
    rule->pattern = strdup(pattern);
    rule->is_namespace = ns != NULL;
    rule->access = (enum acl_access)a;
    if (!rule->pattern) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    return 0;
}

struct acl_rules *acl_rules_load(const char *path, char *err, size_t err_size) {
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(err, err_size, "%s: %s (line %d)", path, jerr.text, jerr.line);
        return NULL;
    }
    json_t *rules_json = json_object_get(root, "rules"),
           *known_json = json_object_get(root, "known");
    struct acl_rules *rules = calloc(1, sizeof *rules);
    if (!json_is_array(rules_json) || (known_json && !json_is_array(known_json))) {
        snprintf(err, err_size, "%s: needs an array \"rules\" (and \"known\" as an array)", path);
        goto fail;
    }
    size_t n = json_array_size(rules_json), k = json_array_size(known_json);
    struct acl_rule *list = calloc(n ? n : 1, sizeof *list);
    const char **known = calloc(k ? k : 1, sizeof *known);
    if (!rules || !list || !known) {
        free(list);
        free(known);
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    rules->rules = list;
    rules->known = known;
    for (size_t i = 0; i < n; i++, rules->count++) {
        if (load_rule(json_array_get(rules_json, i), &list[i], err, err_size) != 0) goto fail;
    }
    for (size_t i = 0; i < k; i++) {
        const char *name = json_string_value(json_array_get(known_json, i));
        if (!name || !acl_channel_name_valid(name, strlen(name))) {
            snprintf(err, err_size, "%s: \"known\" holds a bad channel name", path);
            goto fail;
        }
        if (!(known[i] = strdup(name))) goto fail;
        rules->known_count++;
    }
    json_decref(root);
    return rules;
fail:
    json_decref(root);
    acl_rules_free(rules);
    return NULL;
}
