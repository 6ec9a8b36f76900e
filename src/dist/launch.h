// Who am I in the job: rank, world size and local rank from the launcher's environment.
//
//   torchrun (and scripts/launch.sh): RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK,
//     MASTER_ADDR, MASTER_PORT; with TORCHELASTIC_USE_AGENT_STORE=True the agent already serves
//     the rendezvous store on MASTER_PORT and the workers join it as clients, under the prefix
//     /worker/attempt_<TORCHELASTIC_RESTART_COUNT>.
//   SLURM (srun, one task per GPU): SLURM_PROCID, SLURM_STEP_NUM_TASKS (or SLURM_NTASKS),
//     SLURM_LOCALID, SLURM_NODEID, SLURM_STEP_TASKS_PER_NODE; the master is the first host of
//     SLURM_STEP_NODELIST / SLURM_JOB_NODELIST unless MASTER_ADDR is set, the port MASTER_PORT or
//     one derived from the job id.
//   Neither: a world of one.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace deepthin::dist {

struct LaunchEnv {
  std::string launcher = "none";  // "torchrun", "slurm" or "none"
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool agent_store = false;  // torchrun's agent serves the store: join as a client
  int restart_count = 0;     // torchrun restarts so far (the store prefix)
  bool distributed() const { return world_size > 1; }
  std::string describe() const;
};

using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

// Reads the process environment (or `lookup`, for tests). Malformed values are input errors that
// name the variable.
LaunchEnv detect_launch(const EnvLookup& lookup = {});

// First host of a SLURM node list: "gpu-[003-010,12],cpu1" -> "gpu-003".
std::string first_slurm_host(const std::string& nodelist);

}  // namespace deepthin::dist
