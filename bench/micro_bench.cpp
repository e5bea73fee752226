// Micro-benchmarks of the relay's building blocks (Google Benchmark). Run
// as a smoke test by ctest; run for numbers with:
//   build/bench/convoke-micro-bench --benchmark_min_time=1

#include <benchmark/benchmark.h>

#include <fmt/format.h>

#include <functional>

#include "convoke/proto/codec.hpp"
#include "envelope_scan.hpp"
#include "routing_table.hpp"
#include "summoner_wire.hpp"
#include "trace.hpp"
#include "trace_ring.hpp"

using namespace convoke;

namespace {

v1::Frame sample_envelope(size_t payload) {
  v1::Frame f;
  auto e = f.mutable_envelope();
  e->set_route("weather");
  e->set_payload(std::string(payload, 'p'));
  e->set_trace_id(std::string(16, 't'));
  e->set_sent_unix_nanos(1'700'000'000'000'000'000);
  e->set_client_seq(42);
  return f;
}

void BM_EncodeFrame(benchmark::State& state) {
  auto f = sample_envelope(static_cast<size_t>(state.range(0)));
  std::vector<char> out;
  for (auto _ : state) {
    out.clear();
    proto::append_frame(f, out);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_EncodeFrame)->Arg(100)->Arg(1000);

void BM_DecodeFrame(benchmark::State& state) {
  auto bytes = sample_envelope(static_cast<size_t>(state.range(0))).SerializeAsString();
  v1::Frame f;
  for (auto _ : state)
    benchmark::DoNotOptimize(proto::decode_frame(bytes, f));
}
BENCHMARK(BM_DecodeFrame)->Arg(100)->Arg(1000);

void BM_ScanEnvelope(benchmark::State& state) {
  auto bytes = sample_envelope(static_cast<size_t>(state.range(0))).SerializeAsString();
  server::envelope_view v;
  for (auto _ : state)
    benchmark::DoNotOptimize(server::scan_envelope_frame(bytes, v));
}
BENCHMARK(BM_ScanEnvelope)->Arg(100)->Arg(1000);

/// The per-message work of the session's fast path: scan + stamp + append.
void BM_RelayFastPath(benchmark::State& state) {
  auto bytes = sample_envelope(100).SerializeAsString();
  std::vector<char> out;
  out.reserve(1 << 20);
  server::envelope_view v;
  uint64_t id = 1;
  for (auto _ : state) {
    if (out.size() > (1 << 19))
      out.clear();
    server::scan_envelope_frame(bytes, v);
    server::append_delivery_frame(out, v.envelope, id++, "sender-agent", 1'700'000'000'000'000'000);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RelayFastPath);

/// A 100-byte line as the Summoner SDK writes it.
std::string summoner_typed_line() {
  std::string line = R"({"_version": "1.3.0", "_payload": {"msg": ")";
  std::string end = R"("}, "_type": {"msg": "str"}})";
  line.append(100 - line.size() - end.size(), 'm');
  return line + end;
}

/// A Summoner receiver's per-message work: a run of 64 Delivery frames of
/// a 100-byte typed line (from another Summoner client) rendered into relay
/// lines. Items = lines.
void BM_SummonerRender(benchmark::State& state) {
  namespace sw = server::summoner;
  auto line = summoner_typed_line();
  std::vector<char> frame;
  sw::append_envelope_frame(frame, sw::classify(line), "summoner", "127.0.0.1:35586",
                            1'700'000'000'000'000'000);
  server::envelope_view v;
  server::scan_envelope_frame({frame.data() + 4, frame.size() - 4}, v);
  std::vector<char> frames;
  for (uint64_t id = 1; id <= 64; ++id)
    server::append_delivery_frame(frames, v.envelope, id, "summoner@127.0.0.1:35586",
                                  1'700'000'000'000'000'000);
  std::string out;
  std::string scratch;
  for (auto _ : state) {
    out.clear();
    auto r
      = sw::render_deliveries({frames.data(), frames.size()}, sw::sdk_line_limit, out, scratch);
    benchmark::DoNotOptimize(r.lines);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * 64);
}
BENCHMARK(BM_SummonerRender);

/// A Summoner sender's per-line work: split a read of 64 such lines,
/// classify each, write its envelope frame. Items = lines.
void BM_SummonerLineIn(benchmark::State& state) {
  namespace sw = server::summoner;
  std::string read;
  for (int i = 0; i < 64; ++i)
    read += summoner_typed_line() + "\n";
  sw::line_splitter splitter{sw::sdk_line_limit};
  std::vector<char> out;
  for (auto _ : state) {
    out.clear();
    splitter.append(read.data(), read.size());
    std::string_view line;
    while (splitter.next(line) == sw::line_splitter::result::line)
      sw::append_envelope_frame(out, sw::classify(line), "summoner", "127.0.0.1:35586",
                                1'700'000'000'000'000'000);
    splitter.compact();
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * 64);
}
BENCHMARK(BM_SummonerLineIn);

/// Splitting a 64 KiB read of coalesced frames.
void BM_SplitRead(benchmark::State& state) {
  std::string stream;
  while (stream.size() < 64 * 1024)
    stream += proto::encode_frame(sample_envelope(100));
  size_t frames = 0;
  for (auto _ : state) {
    proto::frame_splitter s;
    s.append(stream.data(), stream.size());
    std::string_view body;
    while (s.next(body))
      ++frames;
    s.compact();
  }
  state.SetItemsProcessed(static_cast<int64_t>(frames));
}
BENCHMARK(BM_SplitRead);

/// The router's fan-out step: resolve receivers of one broadcast.
void BM_FanoutTargets(benchmark::State& state) {
  server::routing_table<int> table;
  auto n = state.range(0);
  for (int64_t i = 0; i < n; ++i)
    table.add(static_cast<uint64_t>(i), "agent-" + std::to_string(i), "", static_cast<int>(i), {});
  std::vector<server::routing_table<int>::entry*> out;
  for (auto _ : state) {
    out.clear();
    table.broadcast_targets(0, "weather", out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * (n - 1));
}
BENCHMARK(BM_FanoutTargets)->Arg(10)->Arg(100)->Arg(1000);

// -- route subscriptions (issue 9) -------------------------------------------
//
// 10 receivers x 1000 distinct subscriptions = 10,000, one publisher
// (session 0, subscribed elsewhere). The "targets" counter is the number
// of receivers the route reaches.

using route_table = server::routing_table<int>;

void add_receivers(route_table& table,
                   const std::function<std::string(int receiver, int k)>& subscription) {
  table.add(0, "pub", "", 0, {"pub.only"});
  for (int i = 1; i <= 10; ++i) {
    std::vector<std::string> routes;
    for (int k = 0; k < 1000; ++k)
      routes.push_back(subscription(i, k));
    table.add(static_cast<uint64_t>(i), "rx-" + std::to_string(i), "", i, routes);
  }
}

void run_targets(benchmark::State& state, route_table& table, std::string_view route) {
  std::vector<route_table::entry*> out;
  for (auto _ : state) {
    out.clear();
    table.broadcast_targets(0, route, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["targets"] = static_cast<double>(out.size());
  state.SetItemsProcessed(state.iterations());
}

/// (a)/(c) 10k exact subscriptions, a route matching one of them. Arg 0: no
/// pattern subscription anywhere (today's path: one hash lookup); Arg 1: an
/// 11th receiver holds one pattern that does not match ("other.*"), so the
/// broadcast also stamps and walks the (tiny) trie.
void BM_RouteTargetsExact10k(benchmark::State& state) {
  route_table table;
  add_receivers(table, [](int i, int k) { return fmt::format("bench.r{}.t{}", i, k); });
  if (state.range(0) != 0)
    table.add(11, "rx-pattern", "", 11, {"other.*"});
  run_targets(state, table, "bench.r3.t500");
}
BENCHMARK(BM_RouteTargetsExact10k)->Arg(0)->Arg(1);

/// (b) 10k pattern subscriptions, "*" and ">" in several positions; the
/// route matches two of them (receivers 2 and 3).
void BM_RouteTargetsPatterns10k(benchmark::State& state) {
  route_table table;
  add_receivers(table, [](int i, int k) {
    if (i % 2 == 0)
      return k % 2 == 0 ? fmt::format("bench.t{}.r{}.*", k, i)
                        : fmt::format("bench.t{}.r{}.>", k, i);
    return k % 2 == 0 ? fmt::format("bench.t{}.*.r{}", k, i) : fmt::format("*.t{}.r{}.>", k, i);
  });
  run_targets(state, table, "bench.t42.r2.r3");
}
BENCHMARK(BM_RouteTargetsPatterns10k);

/// Copying one batch (64 frames) into each receiver's output buffer.
void BM_DeliveryCopy(benchmark::State& state) {
  std::vector<char> batch;
  for (int i = 0; i < 64; ++i)
    proto::append_frame(sample_envelope(100), batch);
  std::vector<std::vector<char>> outs(static_cast<size_t>(state.range(0)));
  for (auto _ : state) {
    for (auto& o : outs) {
      o.clear();
      o.insert(o.end(), batch.begin(), batch.end());
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * 64 * state.range(0));
}
BENCHMARK(BM_DeliveryCopy)->Arg(10)->Arg(100);

} // namespace

namespace {

convoke::trace::event sample_trace() {
  convoke::trace::event ev;
  ev.message_id = 123456;
  ev.seq = 987654;
  ev.boot = "0123456789abcdef";
  ev.sender = "weather-station";
  ev.route = "weather";
  ev.count = 10;
  ev.audience = 3;
  ev.payload_bytes = 100;
  ev.sent_ns = 1'700'000'000'000'000'000;
  ev.accepted_ns = ev.sent_ns + 50'000;
  ev.ts_ns = ev.accepted_ns + 1'000;
  ev.trace_id = std::string(16, 't');
  return ev;
}

convoke::server::record_fields sample_fields(const convoke::trace::event& ev) {
  convoke::server::record_fields f;
  f.message_id = ev.message_id;
  f.sender = ev.sender;
  f.route = ev.route;
  f.count = ev.count;
  f.audience = ev.audience;
  f.payload_bytes = ev.payload_bytes;
  f.sent_ns = ev.sent_ns;
  f.accepted_ns = ev.accepted_ns;
  f.ts_ns = ev.ts_ns;
  f.trace_id = ev.trace_id;
  return f;
}

/// What the relay thread spends per record: encode into the ring (the
/// benchmark drains it every 1024 records, outside the timing's hot loop).
void BM_RecordTrace(benchmark::State& state) {
  auto ev = sample_trace();
  auto f = sample_fields(ev);
  convoke::server::trace_ring ring{1 << 20};
  size_t n = 0;
  for (auto _ : state) {
    auto size = convoke::server::record_size(f);
    if (auto p = ring.reserve(static_cast<uint32_t>(size))) {
      convoke::server::encode_record(f, p);
      ring.commit();
    }
    if (++n % 1024 == 0)
      ring.drain([](std::string_view r) { benchmark::DoNotOptimize(r.data()); });
  }
}
BENCHMARK(BM_RecordTrace);

/// What the trace writer thread spends per record: decode, then format
/// (its sustainable rate is about 1 / this, minus the file write).
void BM_DecodeAndFormatTraceText(benchmark::State& state) {
  auto ev = sample_trace();
  auto f = sample_fields(ev);
  std::string rec(convoke::server::record_size(f), '\0');
  convoke::server::encode_record(f, rec.data());
  convoke::trace::event back;
  std::string out;
  for (auto _ : state) {
    convoke::server::decode_record(rec, back);
    out.clear();
    convoke::trace::append_text(out, back);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_DecodeAndFormatTraceText);

void BM_FormatTraceText(benchmark::State& state) {
  auto ev = sample_trace();
  std::string out;
  for (auto _ : state) {
    out.clear();
    convoke::trace::append_text(out, ev);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_FormatTraceText);

void BM_FormatTraceJson(benchmark::State& state) {
  auto ev = sample_trace();
  std::string out;
  for (auto _ : state) {
    out.clear();
    convoke::trace::append_json(out, ev);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_FormatTraceJson);

} // namespace

BENCHMARK_MAIN();
