#pragma once

/// @file
/// Convoke client SDK: everything an agent program needs.

#include "convoke/client/agent.hpp"
#include "convoke/client/error.hpp"
#include "convoke/client/message.hpp"
#include "convoke/client/options.hpp"
#include "convoke/client/runtime.hpp"
