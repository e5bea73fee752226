// fuzz_credentials: the credentials file parser (server/src/credentials.cpp).
//
// The input is the text of a credentials file. credential_store::parse must
// not crash or throw; a refusal lists problems that each have a code and a
// text starting with the origin and a line ("creds.toml:N:"). An accepted
// file's identities have a valid name, at least one name pattern and an
// argon2id hash string; writing each one back with format_identity and
// parsing that gives the same names, rights and limits.

#include <cstdint>
#include <string>
#include <string_view>

#include "check.hpp"
#include "convoke/proto/rules.hpp"
#include "credentials.hpp"

using namespace convoke;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text{reinterpret_cast<const char*>(data), size};
  auto st = server::credential_store::parse(text, "creds.toml");
  if (!st) {
    FUZZ_CHECK(!st.error().empty());
    for (auto& e : st.error())
      FUZZ_CHECK(static_cast<bool>(e.code) && e.text.rfind("creds.toml:", 0) == 0);
    return 0;
  }
  for (auto& [name, id] : (*st)->all()) {
    FUZZ_CHECK(name == id->name && proto::check_agent_name(name).has_value());
    FUZZ_CHECK(!id->names.empty());
    FUZZ_CHECK(id->token_hash.rfind("$argon2id$", 0) == 0);
    auto again = server::credential_store::parse(server::format_identity(*id), "again.toml");
    FUZZ_CHECK(again.has_value());
    auto back = (*again)->find(name);
    FUZZ_CHECK(back != nullptr);
    FUZZ_CHECK(back->token_hash == id->token_hash && back->names == id->names);
    auto& a = id->rights;
    auto& b = back->rights;
    FUZZ_CHECK(a.publish == b.publish && a.subscribe == b.subscribe && a.send == b.send);
    FUZZ_CHECK(a.receive == b.receive && a.observe == b.observe && a.admin == b.admin);
    FUZZ_CHECK(id->limits.messages_per_second == back->limits.messages_per_second);
    FUZZ_CHECK(id->limits.bytes_per_second == back->limits.bytes_per_second);
  }
  return 0;
}
