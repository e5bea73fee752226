#include "trace_view.hpp"

#include <algorithm>
#include <iterator>

#include <fmt/format.h>

#include "convoke/common/text.hpp"

namespace convoke::cli {

namespace {

std::string millis(int64_t ns) {
  return fmt::format("{:.3f} ms", static_cast<double>(ns) / 1e6);
}

int64_t accepted_or_ts(const trace::event& ev) {
  return ev.accepted_ns != 0 ? ev.accepted_ns : ev.ts_ns;
}

std::string join(const std::vector<std::string>& names, size_t limit) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < limit; ++i) {
    if (i > 0)
      out += ',';
    out += logfmt_value(names[i]);
  }
  if (names.size() > limit)
    out += fmt::format(",...(+{})", names.size() - limit);
  return out;
}

} // namespace

std::string render_line(const trace::event& ev) {
  std::string out = format_timestamp(ev.ts_ns);
  auto it = std::back_inserter(out);
  fmt::format_to(it, " {}", trace::to_string(ev.what));
  switch (ev.what) {
  case trace::kind::audience:
    fmt::format_to(it, " audience={} recipients={}", ev.audience, join(ev.recipients, 50));
    return out;
  case trace::kind::gap:
    fmt::format_to(it, " lost={} reason={}", ev.count, logfmt_value(ev.reason));
    return out;
  case trace::kind::joined:
  case trace::kind::left:
    fmt::format_to(it, " agent={}", logfmt_value(ev.sender));
    if (!ev.address.empty())
      fmt::format_to(it, " address={}", logfmt_value(ev.address));
    if (!ev.identity.empty())
      fmt::format_to(it, " identity={}", logfmt_value(ev.identity));
    if (!ev.reason.empty())
      fmt::format_to(it, " reason={}", logfmt_value(ev.reason));
    return out;
  case trace::kind::dropped:
    fmt::format_to(it, " m={}..{} to={} count={} reason={}", ev.message_id, ev.last_message_id,
                   logfmt_value(ev.recipient), ev.count, logfmt_value(ev.reason));
    return out;
  default:
    break;
  }
  if (ev.last_message_id > ev.message_id)
    fmt::format_to(it, " m={}..{}", ev.message_id, ev.last_message_id);
  else
    fmt::format_to(it, " m={}", ev.message_id);
  // `written` records name the recipient only.
  if (!ev.sender.empty() || ev.what != trace::kind::written)
    fmt::format_to(it, " {}", logfmt_value(ev.sender));
  fmt::format_to(it, " -> {}",
                 ev.recipient.empty() ? std::string{"*"} : logfmt_value(ev.recipient));
  if (!ev.route.empty())
    fmt::format_to(it, " route={}", logfmt_value(ev.route));
  if (ev.what == trace::kind::relay && ev.recipient.empty()) {
    fmt::format_to(it, " fanout={}", ev.count);
    if (!ev.recipients.empty())
      fmt::format_to(it, " to=[{}]", join(ev.recipients, 8));
  } else if (ev.count > 1) {
    fmt::format_to(it, " count={}", ev.count);
  }
  if (!ev.reason.empty())
    fmt::format_to(it, " reason={}", logfmt_value(ev.reason));
  if (!ev.nodes.empty())
    fmt::format_to(it, " nodes={}", logfmt_value(ev.nodes));
  if (ev.payload_bytes != 0)
    fmt::format_to(it, " bytes={}", ev.payload_bytes);
  if (ev.sent_ns > 0 && ev.accepted_ns >= ev.sent_ns)
    fmt::format_to(it, " ingress_us={}", (ev.accepted_ns - ev.sent_ns) / 1000);
  if (ev.what == trace::kind::written && ev.accepted_ns > 0 && ev.ts_ns >= ev.accepted_ns)
    fmt::format_to(it, " relay_us={}", (ev.ts_ns - ev.accepted_ns) / 1000);
  if (ev.request_id != 0)
    fmt::format_to(it, " request={}", ev.request_id);
  if (ev.in_reply_to != 0)
    fmt::format_to(it, " reply_to={}", ev.in_reply_to);
  if (!ev.trace_id.empty())
    fmt::format_to(it, " trace={}", to_hex(ev.trace_id));
  if (!ev.span_id.empty())
    fmt::format_to(it, " span={}", to_hex(ev.span_id));
  if (!ev.payload.empty() || ev.payload_truncated) {
    out += " payload=";
    append_json_string(out, ev.payload);
    if (ev.payload_truncated)
      out += "...";
  }
  return out;
}

// -- conversation builder ------------------------------------------------------------

conversation_builder::conversation_builder(std::string trace_id) {
  conv_.trace_id = std::move(trace_id);
}

void conversation_builder::first_pass(const trace::event& ev) {
  if (ev.trace_id != conv_.trace_id || ev.what == trace::kind::audience)
    return;
  found_ = true;
  if (ev.message_id != 0 && messages_.size() < max_messages)
    messages_.insert({ev.boot, ev.message_id});
  if (ev.request_id != 0 && ev.what == trace::kind::relay && requests_.size() < max_messages)
    requests_[{ev.boot, ev.sender, ev.request_id}] = accepted_or_ts(ev);
}

bool conversation_builder::mine(const trace::event& ev) const {
  if (ev.what == trace::kind::audience)
    return false;
  if (!ev.trace_id.empty())
    return ev.trace_id == conv_.trace_id;
  if (ev.message_id != 0) {
    if (ev.what == trace::kind::dropped || ev.last_message_id > ev.message_id) {
      auto it = messages_.lower_bound({ev.boot, ev.message_id});
      return it != messages_.end() && it->first == ev.boot
             && it->second <= std::max(ev.last_message_id, ev.message_id);
    }
    if (messages_.count({ev.boot, ev.message_id}) != 0)
      return true;
  }
  // A reply to one of the conversation's requests without the trace id.
  return ev.what == trace::kind::relay && ev.in_reply_to != 0
         && requests_.count({ev.boot, ev.recipient, ev.in_reply_to}) != 0;
}

void conversation_builder::arrow(conversation_arrow a) {
  if (conv_.arrows.size() >= max_arrows) {
    if (!cut_)
      conv_.notes.push_back(
        fmt::format("more than {} arrows: the rest of the conversation is left out", max_arrows));
    cut_ = true;
    return;
  }
  for (auto* name : {&a.from, &a.to})
    if (std::find(conv_.agents.begin(), conv_.agents.end(), *name) == conv_.agents.end())
      conv_.agents.push_back(*name);
  conv_.arrows.push_back(std::move(a));
}

void conversation_builder::add(const trace::event& ev) {
  if (!mine(ev))
    return;
  auto base = [&] {
    conversation_arrow a;
    a.ts_ns = ev.what == trace::kind::relay ? accepted_or_ts(ev) : ev.ts_ns;
    a.from = ev.sender.empty() ? std::string{"?"} : ev.sender;
    a.message_id = ev.message_id;
    a.what = ev.what;
    a.route = ev.route;
    a.bytes = ev.payload_bytes;
    a.request_id = ev.request_id;
    a.in_reply_to = ev.in_reply_to;
    a.reason = ev.reason;
    if (ev.sent_ns > 0 && ev.accepted_ns >= ev.sent_ns)
      a.ingress_ns = ev.accepted_ns - ev.sent_ns;
    return a;
  };
  switch (ev.what) {
  case trace::kind::relay: {
    if (ev.message_id != 0 && messages_.size() < max_messages)
      messages_.insert({ev.boot, ev.message_id});
    accepted_[{ev.boot, ev.message_id}] = {accepted_or_ts(ev), ev.sender};
    int64_t reply_after = 0;
    if (ev.in_reply_to != 0)
      if (auto it = requests_.find({ev.boot, ev.recipient, ev.in_reply_to}); it != requests_.end())
        reply_after = accepted_or_ts(ev) - it->second;
    if (!ev.recipient.empty()) {
      auto a = base();
      a.to = ev.recipient;
      a.reply_after_ns = reply_after;
      arrow(std::move(a));
      return;
    }
    if (ev.recipients.empty()) {
      auto a = base();
      a.to = "*";
      a.fanout = ev.count;
      arrow(std::move(a));
      return;
    }
    for (auto& r : ev.recipients) {
      auto a = base();
      a.to = r;
      a.fanout = static_cast<uint32_t>(ev.recipients.size());
      a.reply_after_ns = reply_after;
      arrow(std::move(a));
    }
    return;
  }
  case trace::kind::written: {
    // The latency to this recipient, on the message's arrow.
    for (auto it = conv_.arrows.rbegin(); it != conv_.arrows.rend(); ++it)
      if (it->message_id == ev.message_id && it->to == ev.recipient
          && it->what == trace::kind::relay) {
        if (ev.ts_ns >= it->ts_ns)
          it->delivery_ns = ev.ts_ns - it->ts_ns;
        return;
      }
    return;
  }
  case trace::kind::dropped: {
    // Messages of the range queued for the recipient and never written.
    auto last = std::max(ev.last_message_id, ev.message_id);
    bool any = false;
    for (auto& a : conv_.arrows)
      if (a.message_id >= ev.message_id && a.message_id <= last && a.to == ev.recipient
          && a.what == trace::kind::relay) {
        a.what = trace::kind::dropped;
        a.reason = ev.reason;
        any = true;
      }
    if (!any)
      conv_.notes.push_back(fmt::format("{}: messages {}..{} to {} dropped ({})",
                                        format_timestamp(ev.ts_ns), ev.message_id, last,
                                        ev.recipient, ev.reason));
    return;
  }
  case trace::kind::undeliverable:
  case trace::kind::rejected: {
    auto a = base();
    a.to = ev.recipient.empty() ? std::string{"*"} : ev.recipient;
    arrow(std::move(a));
    return;
  }
  default:
    conv_.notes.push_back(render_line(ev));
    return;
  }
}

conversation conversation_builder::finish() {
  return std::move(conv_);
}

// -- renderings ------------------------------------------------------------------------

namespace {

std::string arrow_label(const conversation_arrow& a) {
  std::string out = fmt::format("m={}", a.message_id);
  auto it = std::back_inserter(out);
  if (!a.route.empty())
    fmt::format_to(it, " route={}", a.route);
  if (a.request_id != 0)
    fmt::format_to(it, ", request {}", a.request_id);
  if (a.in_reply_to != 0) {
    fmt::format_to(it, ", reply to {}", a.in_reply_to);
    if (a.reply_after_ns > 0)
      fmt::format_to(it, " after {}", millis(a.reply_after_ns));
  }
  if (a.fanout > 0)
    fmt::format_to(it, ", fan-out {}", a.fanout);
  if (a.bytes > 0)
    fmt::format_to(it, ", {} B", a.bytes);
  if (a.ingress_ns > 0)
    fmt::format_to(it, ", ingress {}", millis(a.ingress_ns));
  if (a.delivery_ns > 0)
    fmt::format_to(it, ", written +{}", millis(a.delivery_ns));
  if (a.failed())
    fmt::format_to(it, ", {}{}{}", trace::to_string(a.what), a.reason.empty() ? "" : ": ",
                   a.reason);
  return out;
}

size_t column_of(const conversation& c, const std::string& name) {
  return static_cast<size_t>(std::find(c.agents.begin(), c.agents.end(), name) - c.agents.begin());
}

int64_t first_ts(const conversation& c) {
  int64_t t = 0;
  for (auto& a : c.arrows)
    if (t == 0 || (a.ts_ns != 0 && a.ts_ns < t))
      t = a.ts_ns;
  return t;
}

} // namespace

std::string render_sequence_text(const conversation& c) {
  std::string out = fmt::format("trace {}: {} agents, {} arrows", to_hex(c.trace_id),
                                c.agents.size(), c.arrows.size());
  auto t0 = first_ts(c);
  if (t0 != 0)
    out += fmt::format(", from {}", format_timestamp(t0));
  out += '\n';
  size_t width = 14;
  for (auto& a : c.agents)
    width = std::max(width, std::min<size_t>(a.size() + 2, 32));
  const size_t lead = 12; // "+1234.567ms "
  size_t span = c.agents.empty() ? 0 : (c.agents.size() - 1) * width + 1;
  std::string header(lead, ' ');
  for (size_t i = 0; i < c.agents.size(); ++i) {
    auto name = c.agents[i].substr(0, width - 1);
    header += name;
    if (i + 1 < c.agents.size())
      header.append(width - name.size(), ' ');
  }
  out += header + '\n';
  for (auto& a : c.arrows) {
    std::string row(span, ' ');
    for (size_t i = 0; i < c.agents.size(); ++i)
      row[i * width] = '|';
    auto pa = column_of(c, a.from) * width;
    auto pb = column_of(c, a.to) * width;
    char head = a.failed() ? 'x' : (pa < pb ? '>' : '<');
    if (pa < pb) {
      for (auto p = pa + 1; p + 1 < pb; ++p)
        row[p] = '-';
      row[pb - 1] = head;
    } else if (pa > pb) {
      for (auto p = pb + 2; p < pa; ++p)
        row[p] = '-';
      row[pb + 1] = head;
    } else {
      row.resize(std::max(row.size(), pa + 4), ' ');
      row[pa + 1] = '-';
      row[pa + 2] = '-';
      row[pa + 3] = a.failed() ? 'x' : '\'';
    }
    auto rel = t0 != 0 && a.ts_ns >= t0 ? a.ts_ns - t0 : 0;
    auto stamp = fmt::format("{:>9.3f}ms ", static_cast<double>(rel) / 1e6);
    stamp.resize(lead, ' ');
    out += stamp + row + "   " + arrow_label(a) + '\n';
  }
  for (auto& n : c.notes)
    out += "note: " + n + '\n';
  return out;
}

namespace {

/// Mermaid message text: no line breaks; '#' and ';' as entity codes.
std::string mermaid_text(std::string_view s) {
  std::string out;
  for (char ch : s) {
    if (ch == '\n' || ch == '\r')
      out += ' ';
    else if (ch == '#')
      out += "#35;";
    else if (ch == ';')
      out += "#59;";
    else
      out += ch;
  }
  return out;
}

} // namespace

std::string render_mermaid(const conversation& c) {
  std::string out = "sequenceDiagram\n";
  out += fmt::format("    %% convoke trace show {}\n", to_hex(c.trace_id));
  for (size_t i = 0; i < c.agents.size(); ++i)
    out += fmt::format("    participant a{} as {}\n", i, mermaid_text(c.agents[i]));
  auto t0 = first_ts(c);
  for (auto& a : c.arrows) {
    std::string_view kind = "->>";
    if (a.failed())
      kind = "-x";
    else if (a.in_reply_to != 0)
      kind = "-->>";
    else if (a.fanout > 0)
      kind = "-)";
    auto rel = t0 != 0 && a.ts_ns >= t0 ? a.ts_ns - t0 : 0;
    out += fmt::format("    a{}{}a{}: +{} {}\n", column_of(c, a.from), kind, column_of(c, a.to),
                       millis(rel), mermaid_text(arrow_label(a)));
  }
  for (auto& n : c.notes)
    if (!c.agents.empty())
      out += fmt::format("    Note over a0: {}\n", mermaid_text(n));
  return out;
}

namespace {

std::string xml_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char ch : s) {
    switch (ch) {
    case '&':
      out += "&amp;";
      break;
    case '<':
      out += "&lt;";
      break;
    case '>':
      out += "&gt;";
      break;
    case '"':
      out += "&quot;";
      break;
    case '\'':
      out += "&#39;";
      break;
    default:
      // XML 1.0 has no control characters but tab and newline.
      if (ch < 0x20 && ch != '\t' && ch != '\n')
        out += "\xEF\xBF\xBD"; // U+FFFD
      else
        out += static_cast<char>(ch);
    }
  }
  return out;
}

/// Invalid UTF-8 replaced (agent names and payloads are peer bytes).
std::string clean_utf8(std::string_view s) {
  // Valid input is kept as is; otherwise every non-ASCII byte becomes '?'.
  std::string out;
  bool valid = true;
  for (size_t i = 0; i < s.size() && valid;) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) {
      valid = false;
      break;
    }
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2)
        valid = false;
    i += n;
  }
  if (valid)
    return std::string{s};
  for (unsigned char ch : s)
    out += ch < 0x80 ? static_cast<char>(ch) : '?';
  return out;
}

std::string esc(std::string_view s) {
  return xml_escape(clean_utf8(s));
}

} // namespace

std::string render_html(const conversation& c) {
  const int col = 180;
  const int left = 110;
  const int top = 60;
  const int row = 34;
  const int width = left + static_cast<int>(std::max<size_t>(c.agents.size(), 1)) * col;
  const int height = top + static_cast<int>(c.arrows.size()) * row + 40;
  auto x_of = [&](const std::string& name) {
    return left + static_cast<int>(column_of(c, name)) * col + col / 2;
  };
  auto hex = to_hex(c.trace_id);
  std::string out;
  auto it = std::back_inserter(out);
  fmt::format_to(it,
                 "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                 "<title>Conversation {}</title>\n<style>\n"
                 "body{{font-family:sans-serif;margin:1.5em;color:#222}}\n"
                 "svg text{{font-size:12px;font-family:monospace}}\n"
                 ".lifeline line{{stroke:#999;stroke-dasharray:4 3}}\n"
                 ".lifeline rect{{fill:#eef3fb;stroke:#4a6fa5}}\n"
                 ".message line{{stroke:#1b5e20;stroke-width:1.5}}\n"
                 ".message polygon{{fill:#1b5e20}}\n"
                 ".message.reply line{{stroke:#0d47a1;stroke-dasharray:6 3}}\n"
                 ".message.reply polygon{{fill:#0d47a1}}\n"
                 ".message.failed line{{stroke:#b71c1c}}\n"
                 ".message.failed polygon{{fill:#b71c1c}}\n"
                 ".time{{fill:#666}}\n"
                 "table{{border-collapse:collapse;font-size:13px}}\n"
                 "td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}\n"
                 "</style>\n</head>\n<body>\n<h1>Conversation {}</h1>\n"
                 "<p>{} agents, {} messages (arrows). Times are relative to the first message",
                 hex, hex, c.agents.size(), c.arrows.size());
  auto t0 = first_ts(c);
  if (t0 != 0)
    fmt::format_to(it, ", {}", format_timestamp(t0));
  out += ".</p>\n";
  fmt::format_to(it,
                 "<svg class=\"timeline\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
                 "role=\"img\">\n",
                 width, height, width, height);
  for (auto& name : c.agents) {
    int x = x_of(name);
    fmt::format_to(it,
                   "<g class=\"lifeline\" data-agent=\"{}\"><rect x=\"{}\" y=\"10\" width=\"{}\" "
                   "height=\"24\" rx=\"4\"/><text x=\"{}\" y=\"26\" "
                   "text-anchor=\"middle\">{}</text><line x1=\"{}\" y1=\"34\" x2=\"{}\" "
                   "y2=\"{}\"/></g>\n",
                   esc(name), x - col / 2 + 10, col - 20, x, esc(name.substr(0, 22)), x, x,
                   height - 10);
  }
  int y = top;
  for (auto& a : c.arrows) {
    y += row;
    int x1 = x_of(a.from);
    int x2 = x_of(a.to);
    std::string cls = "message";
    if (a.failed())
      cls += " failed";
    else if (a.in_reply_to != 0)
      cls += " reply";
    if (a.fanout > 0)
      cls += " broadcast";
    auto rel = t0 != 0 && a.ts_ns >= t0 ? a.ts_ns - t0 : 0;
    auto label = arrow_label(a);
    fmt::format_to(it,
                   "<g class=\"{}\" data-from=\"{}\" data-to=\"{}\" data-message-id=\"{}\" "
                   "data-kind=\"{}\"><title>{}</title>",
                   cls, esc(a.from), esc(a.to), a.message_id, trace::to_string(a.what),
                   esc(format_timestamp(a.ts_ns) + " " + label));
    fmt::format_to(it, "<text class=\"time\" x=\"4\" y=\"{}\">+{}</text>", y + 4, esc(millis(rel)));
    if (x1 == x2) {
      fmt::format_to(it,
                     "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/><polygon points=\"{},{} "
                     "{},{} {},{}\"/>",
                     x1, y - 6, x1 + 30, y + 6, x1, y + 6, x1 + 8, y + 2, x1 + 8, y + 10);
    } else {
      int dir = x2 > x1 ? 1 : -1;
      fmt::format_to(it,
                     "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/><polygon points=\"{},{} "
                     "{},{} {},{}\"/>",
                     x1, y, x2 - dir * 8, y, x2, y, x2 - dir * 9, y - 5, x2 - dir * 9, y + 5);
    }
    fmt::format_to(it, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text></g>\n",
                   (x1 + x2) / 2 + (x1 == x2 ? 40 : 0), y - 5, esc(label));
  }
  out += "</svg>\n";
  out += "<h2>Messages</h2>\n<table>\n<tr><th>time</th><th>from</th><th>to</th><th>what</th>"
         "</tr>\n";
  for (auto& a : c.arrows)
    fmt::format_to(it, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                   esc(format_timestamp(a.ts_ns)), esc(a.from), esc(a.to), esc(arrow_label(a)));
  out += "</table>\n";
  if (!c.notes.empty()) {
    out += "<h2>Notes</h2>\n<ul>\n";
    for (auto& n : c.notes)
      fmt::format_to(it, "<li>{}</li>\n", esc(n));
    out += "</ul>\n";
  }
  out += "</body>\n</html>\n";
  return out;
}

// -- stats -----------------------------------------------------------------------------

void trace_stats::add(const trace::event& ev) {
  if (ev.what == trace::kind::audience || (from_ns != 0 && ev.ts_ns < from_ns))
    return;
  ++events;
  if (first_ns == 0 || ev.ts_ns < first_ns)
    first_ns = ev.ts_ns;
  last_ns = std::max(last_ns, ev.ts_ns);
  auto agent = [&](const std::string& name) -> agent_stats& {
    if (agents.size() >= max_keys && agents.count(name) == 0)
      return agents["(others)"];
    return agents[name];
  };
  auto route = [&](const std::string& name) -> route_stats& {
    auto key = name.empty() ? std::string{"(none)"} : name;
    if (routes.size() >= max_keys && routes.count(key) == 0)
      return routes["(others)"];
    return routes[key];
  };
  switch (ev.what) {
  case trace::kind::relay: {
    auto& s = agent(ev.sender);
    ++s.sent;
    s.bytes_sent += ev.payload_bytes;
    auto& r = route(ev.route);
    ++r.messages;
    // A direct message has one receiver (count may be left out).
    r.deliveries += ev.recipient.empty() ? ev.count : std::max<uint32_t>(ev.count, 1);
    r.bytes += ev.payload_bytes;
    if (!ev.recipient.empty())
      ++agent(ev.recipient).received;
    else
      for (auto& name : ev.recipients)
        ++agent(name).received;
    return;
  }
  case trace::kind::dropped: {
    uint64_t n = ev.count != 0 ? ev.count : 1;
    agent(ev.recipient).dropped += n;
    if (!ev.route.empty())
      route(ev.route).dropped += n;
    return;
  }
  case trace::kind::undeliverable:
    agent(ev.sender).undeliverable += ev.count != 0 ? ev.count : 1;
    return;
  case trace::kind::rejected:
    ++agent(ev.sender).rejected;
    return;
  case trace::kind::gap:
    gaps += ev.count;
    return;
  default:
    return;
  }
}

std::string trace_stats::render(double seconds) const {
  if (seconds <= 0)
    seconds = 1;
  std::string out;
  auto it = std::back_inserter(out);
  fmt::format_to(it, "{} events over {:.1f} s", events, seconds);
  if (events > 0)
    fmt::format_to(it, " ({} .. {})", format_timestamp(first_ns), format_timestamp(last_ns));
  if (gaps > 0)
    fmt::format_to(it, ", {} trace records lost (gaps)", gaps);
  out += "\n\n";
  size_t w = 5;
  for (auto& [name, s] : agents)
    w = std::max(w, std::min<size_t>(name.size(), 40));
  fmt::format_to(it, "{:<{}}  {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>11}\n", "agent", w,
                 "sent", "sent/s", "received", "recv/s", "dropped", "undeliv", "rejected",
                 "bytes sent");
  for (auto& [name, s] : agents)
    fmt::format_to(it, "{:<{}}  {:>9} {:>9.1f} {:>9} {:>9.1f} {:>8} {:>8} {:>8} {:>11}\n",
                   name.substr(0, 40), w, s.sent, static_cast<double>(s.sent) / seconds, s.received,
                   static_cast<double>(s.received) / seconds, s.dropped, s.undeliverable,
                   s.rejected, s.bytes_sent);
  out += '\n';
  w = 5;
  for (auto& [name, s] : routes)
    w = std::max(w, std::min<size_t>(name.size(), 40));
  fmt::format_to(it, "{:<{}}  {:>9} {:>9} {:>10} {:>8} {:>11}\n", "route", w, "messages", "msg/s",
                 "deliveries", "dropped", "bytes");
  for (auto& [name, s] : routes)
    fmt::format_to(it, "{:<{}}  {:>9} {:>9.1f} {:>10} {:>8} {:>11}\n", name.substr(0, 40), w,
                   s.messages, static_cast<double>(s.messages) / seconds, s.deliveries, s.dropped,
                   s.bytes);
  return out;
}

std::string trace_stats::render_json(double seconds) const {
  if (seconds <= 0)
    seconds = 1;
  std::string out;
  auto it = std::back_inserter(out);
  fmt::format_to(it, "{{\"events\":{},\"seconds\":{:.3f},\"gaps\":{}", events, seconds, gaps);
  if (events > 0) {
    out += ",\"from\":\"" + format_timestamp(first_ns) + "\",\"to\":\"" + format_timestamp(last_ns)
           + "\"";
  }
  out += ",\"agents\":{";
  bool first = true;
  for (auto& [name, s] : agents) {
    if (!first)
      out += ',';
    first = false;
    append_json_string(out, name);
    fmt::format_to(it,
                   ":{{\"sent\":{},\"sent_per_second\":{:.3f},\"received\":{},"
                   "\"received_per_second\":{:.3f},\"dropped\":{},\"undeliverable\":{},"
                   "\"rejected\":{},\"bytes_sent\":{}}}",
                   s.sent, static_cast<double>(s.sent) / seconds, s.received,
                   static_cast<double>(s.received) / seconds, s.dropped, s.undeliverable,
                   s.rejected, s.bytes_sent);
  }
  out += "},\"routes\":{";
  first = true;
  for (auto& [name, s] : routes) {
    if (!first)
      out += ',';
    first = false;
    append_json_string(out, name);
    fmt::format_to(it,
                   ":{{\"messages\":{},\"messages_per_second\":{:.3f},\"deliveries\":{},"
                   "\"dropped\":{},\"bytes\":{}}}",
                   s.messages, static_cast<double>(s.messages) / seconds, s.deliveries, s.dropped,
                   s.bytes);
  }
  out += "}}";
  return out;
}

} // namespace convoke::cli
