#include "dist/launch.h"

#include <cstdlib>

#include "util/error.h"

namespace deepthin::dist {

namespace {

int parse_int(const EnvLookup& env, const std::string& name, int lo, int fallback,
              bool required = false) {
  auto v = env(name);
  if (!v || v->empty()) {
    if (required) fail_input("environment variable " + name + " is not set");
    return fallback;
  }
  char* end = nullptr;
  long x = std::strtol(v->c_str(), &end, 10);
  if (*end != '\0' || x < lo || x > 1'000'000)
    fail_input("environment variable " + name + "='" + *v +
               "' is not an integer >= " + std::to_string(lo));
  return static_cast<int>(x);
}

}  // namespace

std::string LaunchEnv::describe() const {
  return "rank " + std::to_string(rank) + " of " + std::to_string(world_size) + " (local " +
         std::to_string(local_rank) + " of " + std::to_string(local_world_size) + ", node " +
         std::to_string(node_rank) + ", " + launcher + ", master " + master_addr + ":" +
         std::to_string(master_port) + (agent_store ? ", agent store" : "") + ")";
}

std::string first_slurm_host(const std::string& nodelist) {
  // Up to the first comma outside brackets; a bracket range takes its first number as written
  // (zero padding kept).
  std::string host;
  size_t i = 0;
  while (i < nodelist.size() && nodelist[i] != ',' && nodelist[i] != '[') host += nodelist[i++];
  if (i < nodelist.size() && nodelist[i] == '[') {
    ++i;
    while (i < nodelist.size() && nodelist[i] != '-' && nodelist[i] != ',' && nodelist[i] != ']')
      host += nodelist[i++];
    while (i < nodelist.size() && nodelist[i] != ']') ++i;
    if (i < nodelist.size()) ++i;
    // A suffix after the bracket ("n[1-2]-ib") belongs to the host name too.
    while (i < nodelist.size() && nodelist[i] != ',') host += nodelist[i++];
  }
  if (host.empty()) fail_input("cannot read a host name from SLURM node list '" + nodelist + "'");
  return host;
}

LaunchEnv detect_launch(const EnvLookup& lookup) {
  EnvLookup env = lookup ? lookup : [](const std::string& k) -> std::optional<std::string> {
    const char* v = std::getenv(k.c_str());
    return v ? std::optional<std::string>(v) : std::nullopt;
  };
  LaunchEnv e;
  if (env("RANK") && env("WORLD_SIZE")) {
    e.launcher = "torchrun";
    e.world_size = parse_int(env, "WORLD_SIZE", 1, 1);
    e.rank = parse_int(env, "RANK", 0, 0);
    e.local_rank = parse_int(env, "LOCAL_RANK", 0, 0);
    e.local_world_size = parse_int(env, "LOCAL_WORLD_SIZE", 1, e.world_size);
    e.node_rank = parse_int(env, "GROUP_RANK", 0, e.rank / std::max(1, e.local_world_size));
    if (e.world_size > 1) {
      auto addr = env("MASTER_ADDR");
      if (!addr || addr->empty())
        fail_input(
            "RANK and WORLD_SIZE are set but MASTER_ADDR is not; launch with torchrun or "
            "scripts/launch.sh, or export MASTER_ADDR and MASTER_PORT");
      e.master_addr = *addr;
      e.master_port = parse_int(env, "MASTER_PORT", 1, 0, /*required=*/true);
    }
    e.agent_store = env("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
    e.restart_count = parse_int(env, "TORCHELASTIC_RESTART_COUNT", 0, 0);
  } else if (env("SLURM_PROCID") && (env("SLURM_STEP_NUM_TASKS") || env("SLURM_NTASKS"))) {
    e.launcher = "slurm";
    e.world_size = env("SLURM_STEP_NUM_TASKS") ? parse_int(env, "SLURM_STEP_NUM_TASKS", 1, 1)
                                               : parse_int(env, "SLURM_NTASKS", 1, 1);
    e.rank = parse_int(env, "SLURM_PROCID", 0, 0);
    e.local_rank = parse_int(env, "SLURM_LOCALID", 0, 0);
    e.node_rank = parse_int(env, "SLURM_NODEID", 0, 0);
    // "4(x2),3" style; the first count is this layout's tasks per node in the common case.
    auto per_node =
        env("SLURM_STEP_TASKS_PER_NODE").value_or(env("SLURM_TASKS_PER_NODE").value_or(""));
    e.local_world_size = per_node.empty() ? 1 : std::max(1, std::atoi(per_node.c_str()));
    if (auto addr = env("MASTER_ADDR"); addr && !addr->empty()) {
      e.master_addr = *addr;
    } else {
      auto nodes = env("SLURM_STEP_NODELIST");
      if (!nodes) nodes = env("SLURM_JOB_NODELIST");
      if (!nodes) nodes = env("SLURM_NODELIST");
      if (e.world_size > 1 && !nodes)
        fail_input("SLURM_PROCID is set but no SLURM node list is; export MASTER_ADDR");
      if (nodes) e.master_addr = first_slurm_host(*nodes);
    }
    // A port derived from the job id keeps two jobs on one node apart.
    const int job = parse_int(env, "SLURM_JOB_ID", 0, 0);
    e.master_port = env("MASTER_PORT") ? parse_int(env, "MASTER_PORT", 1, 0) : 20000 + job % 20000;
  }
  if (e.rank >= e.world_size)
    fail_input("rank " + std::to_string(e.rank) + " is not below the world size " +
               std::to_string(e.world_size) + " (" + e.launcher + " environment)");
  return e;
}

}  // namespace deepthin::dist
