#include "client/render.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace drfm::client {
namespace {

std::string Pad(std::string_view text, size_t width, Table::Align align) {
  const size_t w = DisplayWidth(text);
  if (w >= width) return std::string(text);
  const std::string fill(width - w, ' ');
  return align == Table::Align::kRight ? fill + std::string(text) : std::string(text) + fill;
}

double SecondsOf(const v1::LayerReport& report) {
  const v1::PhaseValues& s = report.phase_seconds();
  return s.kernel() + s.solve() + s.agop() + s.project() + s.features() + s.metrics();
}

// SVG coordinates: two decimals are finer than any screen.
std::string Num(double v) { return absl::StrFormat("%.2f", v); }

// Decade 10^e as a tick label: plain decimals for 0.001 .. 10000, "1e-5" style beyond.
std::string DecadeLabel(int e) {
  if (e >= 0 && e <= 4) return absl::StrCat("1", std::string(static_cast<size_t>(e), '0'));
  if (e < 0 && e >= -3)
    return absl::StrCat("0.", std::string(static_cast<size_t>(-e - 1), '0'), "1");
  return absl::StrCat("1e", e);
}

bool Plottable(const std::pair<double, double>& p) {
  return std::isfinite(p.first) && std::isfinite(p.second) && p.second > 0;
}

bool IsTerminalState(v1::Job::State state) {
  return state == v1::Job::SUCCEEDED || state == v1::Job::FAILED || state == v1::Job::CANCELLED;
}

constexpr char kFont[] =
    "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif";

}  // namespace

Table::Table(std::vector<std::string> headers, std::vector<Align> align)
    : headers_(std::move(headers)), align_(std::move(align)) {
  align_.resize(headers_.size(), Align::kLeft);
}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::Render() const {
  std::vector<size_t> widths(headers_.size());
  for (size_t c = 0; c < headers_.size(); ++c) {
    widths[c] = DisplayWidth(headers_[c]);
    for (const auto& row : rows_) widths[c] = std::max(widths[c], DisplayWidth(row[c]));
  }
  std::string out;
  auto append_line = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (size_t c = 0; c < cells.size(); ++c) {
      if (c > 0) line += "  ";
      line += Pad(cells[c], widths[c], align_[c]);
    }
    line.erase(line.find_last_not_of(' ') + 1);
    absl::StrAppend(&out, line, "\n");
  };
  append_line(headers_);
  for (const auto& row : rows_) append_line(row);
  return out;
}

size_t DisplayWidth(std::string_view text) {
  size_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

std::string FormatBytes(double bytes) {
  if (bytes < 1024) return absl::StrFormat("%.0f B", bytes);
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  int unit = -1;
  while (bytes >= 1024 && unit < 4) {
    bytes /= 1024;
    ++unit;
  }
  return absl::StrFormat(unit >= 2 ? "%.2f %s" : "%.1f %s", bytes, kUnits[unit]);
}

std::string HumanDuration(absl::Duration duration) {
  if (duration < absl::ZeroDuration()) duration = absl::ZeroDuration();
  const double seconds = absl::ToDoubleSeconds(duration);
  if (seconds < 1) return absl::StrFormat("%.0fms", seconds * 1000);
  if (seconds < 60) return absl::StrFormat("%.1fs", seconds);
  const int64_t whole = static_cast<int64_t>(seconds);
  if (whole < 3600) return absl::StrFormat("%dm%02ds", whole / 60, whole % 60);
  return absl::StrFormat("%dh%02dm", whole / 3600, whole / 60 % 60);
}

std::string FormatFlops(double flops) {
  static constexpr const char* kUnits[] = {"FLOP", "kFLOP", "MFLOP", "GFLOP", "TFLOP", "PFLOP"};
  int unit = 0;
  while (flops >= 1000 && unit < 5) {
    flops /= 1000;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", flops, kUnits[unit]);
}

std::string FormatMetric(double value) {
  if (std::isnan(value)) return "-";
  if (value == 0) return "0";
  const double a = std::fabs(value);
  if (a >= 1e-3 && a < 1e5) return absl::StrFormat("%.4f", value);
  return absl::StrFormat("%.2e", value);
}

std::string FormatAccuracy(double value) { return absl::StrFormat("%.4f", value); }

absl::Time ToAbslTime(const google::protobuf::Timestamp& time) {
  return absl::FromUnixSeconds(time.seconds()) + absl::Nanoseconds(time.nanos());
}

std::string FormatTimestamp(const google::protobuf::Timestamp& time) {
  if (time.seconds() == 0 && time.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", ToAbslTime(time), absl::LocalTimeZone());
}

std::string ProgressBar(double fraction, int width) {
  if (!(fraction >= 0)) fraction = 0;  // NaN too
  fraction = std::min(fraction, 1.0);
  const int filled = static_cast<int>(std::lround(fraction * width));
  std::string bar = "[";
  for (int i = 0; i < width; ++i) {
    bar += i < filled - 1 || (i == filled - 1 && filled == width) ? '='
           : i == filled - 1                                      ? '>'
                                                                  : ' ';
  }
  return bar + "]";
}

std::string TransferLine(std::string_view label, int64_t done, int64_t total,
                         absl::Duration elapsed, int bar_width) {
  const double fraction = total > 0 ? static_cast<double>(done) / static_cast<double>(total) : 1;
  std::string line = absl::StrFormat("%s %s %3.0f%%  %s / %s", std::string(label),
                                     ProgressBar(fraction, bar_width), 100 * fraction,
                                     FormatBytes(static_cast<double>(done)),
                                     FormatBytes(static_cast<double>(total)));
  const double seconds = absl::ToDoubleSeconds(elapsed);
  if (seconds > 0.2) {
    absl::StrAppend(&line, "  ", FormatBytes(static_cast<double>(done) / seconds), "/s");
  }
  return line;
}

std::string LayerTableHeader() {
  return absl::StrFormat("%-7s %8s %8s %8s %8s %8s %8s %7s %7s %7s\n", "layer", "nc1_in",
                         "nc1_proj", "nc1_feat", "nc2_in", "nc2_proj", "nc2_feat", "train", "test",
                         "sec");
}

std::string LayerTableRow(const v1::LayerReport& r) {
  const std::string layer = r.readout() ? "readout" : absl::StrCat(r.layer());
  auto metric = [](bool present, double value) { return present ? FormatMetric(value) : "-"; };
  const bool projected = !r.readout() && r.has_projected();
  const bool features = !r.readout() && r.has_features();
  return absl::StrFormat(
      "%-7s %8s %8s %8s %8s %8s %8s %7s %7s %7.2f\n", layer, FormatMetric(r.input().nc1()),
      metric(projected, r.projected().nc1()), metric(features, r.features().nc1()),
      FormatMetric(r.input().nc2()), metric(projected, r.projected().nc2()),
      metric(features, r.features().nc2()), FormatAccuracy(r.train_accuracy()),
      r.has_test_accuracy() ? FormatAccuracy(r.test_accuracy()) : "-", SecondsOf(r));
}

std::string LayerTable(const std::vector<v1::LayerReport>& reports) {
  std::string out = LayerTableHeader();
  for (const auto& r : reports) out += LayerTableRow(r);
  return out;
}

std::string NetworkTableHeader() {
  return absl::StrFormat("%-7s %10s %7s %7s %7s\n", "epoch", "loss", "train", "test", "sec");
}

std::string NetworkTableRow(const v1::NetworkReport& r) {
  return absl::StrFormat("%-7d %10s %7s %7s %7.2f\n", r.epoch(), FormatMetric(r.train_loss()),
                         FormatAccuracy(r.train_accuracy()),
                         r.has_test_accuracy() ? FormatAccuracy(r.test_accuracy()) : "-",
                         r.seconds());
}

std::string PhaseName(v1::Progress::Phase phase) {
  if (phase == v1::Progress::PHASE_UNSPECIFIED) return "starting";
  return absl::AsciiStrToLower(v1::Progress::Phase_Name(phase));
}

double LayerFraction(v1::Progress::Phase phase, double fraction, bool readout) {
  static constexpr v1::Progress::Phase kLayer[] = {v1::Progress::KERNEL,   v1::Progress::SOLVE,
                                                   v1::Progress::AGOP,     v1::Progress::PROJECT,
                                                   v1::Progress::FEATURES, v1::Progress::METRICS};
  static constexpr v1::Progress::Phase kReadout[] = {v1::Progress::KERNEL, v1::Progress::SOLVE,
                                                     v1::Progress::METRICS};
  fraction = std::clamp(std::isfinite(fraction) ? fraction : 0.0, 0.0, 1.0);
  const v1::Progress::Phase* begin = readout ? std::begin(kReadout) : std::begin(kLayer);
  const v1::Progress::Phase* end = readout ? std::end(kReadout) : std::end(kLayer);
  const auto it = std::find(begin, end, phase);
  if (it == end) return fraction;  // not a Deep RFM phase (TRAIN, MEASURE): its own fraction
  return (static_cast<double>(it - begin) + fraction) / static_cast<double>(end - begin);
}

JobDisplay::JobDisplay(std::ostream& out, bool interactive, std::string job_id)
    : out_(out), interactive_(interactive), job_id_(std::move(job_id)) {}

void JobDisplay::SetJob(const v1::Job& job) {
  absl::MutexLock lock(&mu_);
  kind_ = job.kind();
  layers_total_ = job.layers_total();
  if (layers_total_ == 0 && job.has_config() && job.config().has_layers()) {
    layers_total_ = job.config().layers() + 1;
  }
}

void JobDisplay::OnEvent(const v1::JobEvent& event, absl::Time received) {
  absl::MutexLock lock(&mu_);
  const absl::Time t = event.has_time() ? ToAbslTime(event.time()) : received;
  if (!start_.has_value() && !event.has_state_change()) start_ = t;
  if (event.has_state_change()) {
    const v1::JobStateChange& change = event.state_change();
    state_ = change.state();
    if (state_ == v1::Job::RUNNING || !start_.has_value()) start_ = t;
    if (state_ == v1::Job::QUEUED || state_ == v1::Job::RUNNING) {
      // (Re)starting, e.g. queued again after a server restart: the layers start over.
      layer_ = 0;
      layer_start_.reset();
      phase_ = v1::Progress::PHASE_UNSPECIFIED;
      phase_fraction_ = 0;
      layer_fraction_ = 0;
      layer_worked_ = false;
      finishing_ = false;
    }
    std::string line = absl::StrCat("job ", job_id_, " ", v1::Job::State_Name(change.state()));
    if (IsTerminalState(change.state()) && start_.has_value()) {
      absl::StrAppend(&line, " after ", HumanDuration(t - *start_));
    }
    if (change.has_model() && !change.model().name().empty()) {
      absl::StrAppend(&line, ": model ", change.model().name(), " v", change.model().version());
    }
    if (!change.error().empty()) absl::StrAppend(&line, ": ", change.error());
    if (IsTerminalState(change.state())) {
      // The terminal event ends the display: no status line below the last line.
      if (interactive_ && status_shown_) out_ << "\r\033[K";
      status_shown_ = false;
      finished_ = true;
    }
    PrintLineLocked(line);
  } else if (event.has_progress()) {
    const v1::Progress& p = event.progress();
    const bool new_layer = p.layer() != layer_ || !layer_start_.has_value();
    if (new_layer) {
      layer_ = p.layer();
      layer_start_ = t;
      layer_fraction_ = 0;
      layer_worked_ = false;
    }
    const bool new_phase = new_layer || p.phase() != phase_;
    phase_ = p.phase();
    phase_fraction_ = p.fraction();
    epoch_ = p.epoch();
    const bool readout = layers_total_ > 0 && layer_ == layers_total_ && kind_ != v1::Job::MLP &&
                         kind_ != v1::Job::ANALYSIS;
    // Each layer starts with the collapse metrics of its input; only the metrics after the
    // layer's work (kernel, solve, ...) fill the end of the bar.
    if (p.phase() != v1::Progress::METRICS) {
      layer_worked_ = true;
    }
    if (layer_worked_) {
      layer_fraction_ = std::max(layer_fraction_, LayerFraction(p.phase(), p.fraction(), readout));
    }
    if (!interactive_ && new_phase) {
      const absl::Duration elapsed = start_.has_value() ? t - *start_ : absl::ZeroDuration();
      std::string what = p.phase() == v1::Progress::TRAIN
                             ? absl::StrCat("training, epoch ", p.epoch())
                             : absl::StrCat(LayerLabelLocked(layer_), " ", PhaseName(p.phase()));
      PrintLineLocked(absl::StrFormat("[%8s] %s", HumanDuration(elapsed), what));
    }
  } else if (event.has_layer_report()) {
    if (!header_printed_) {
      std::string header = LayerTableHeader();
      header.pop_back();
      PrintLineLocked(header);
      header_printed_ = true;
    }
    reports_.push_back(event.layer_report());
    std::string row = LayerTableRow(event.layer_report());
    row.pop_back();
    // The next layer starts now; after the readout only the model remains to be stored.
    finishing_ = event.layer_report().readout();
    layer_ = event.layer_report().layer() + 1;
    layer_start_ = t;
    phase_ = v1::Progress::PHASE_UNSPECIFIED;
    phase_fraction_ = 0;
    layer_fraction_ = 0;
    layer_worked_ = false;
    PrintLineLocked(row);
  } else if (event.has_network_report()) {
    if (!network_header_printed_) {
      std::string header = NetworkTableHeader();
      header.pop_back();
      PrintLineLocked(header);
      network_header_printed_ = true;
    }
    std::string row = NetworkTableRow(event.network_report());
    row.pop_back();
    PrintLineLocked(row);
  }
  RedrawLocked(std::max(received, t));
}

void JobDisplay::Notice(std::string_view text) {
  absl::MutexLock lock(&mu_);
  PrintLineLocked(text);
  RedrawLocked(absl::Now());
}

void JobDisplay::Tick(absl::Time now) {
  absl::MutexLock lock(&mu_);
  RedrawLocked(now);
}

void JobDisplay::Finish() {
  absl::MutexLock lock(&mu_);
  if (interactive_ && status_shown_) out_ << "\r\033[K" << std::flush;
  status_shown_ = false;
  finished_ = true;
}

std::vector<v1::LayerReport> JobDisplay::reports() const {
  absl::MutexLock lock(&mu_);
  return reports_;
}

void JobDisplay::PrintLineLocked(std::string_view line) {
  if (interactive_ && status_shown_) {
    out_ << "\r\033[K";
    status_shown_ = false;
  }
  out_ << line << "\n" << std::flush;
}

void JobDisplay::RedrawLocked(absl::Time now) {
  if (!interactive_ || finished_) return;
  out_ << "\r\033[K" << StatusLineLocked(now) << std::flush;
  status_shown_ = true;
}

std::string JobDisplay::LayerLabelLocked(int layer) const {
  if (layers_total_ > 0 && kind_ != v1::Job::MLP && kind_ != v1::Job::ANALYSIS) {
    if (layer == layers_total_) return absl::StrCat("readout ", layer, "/", layers_total_);
    return absl::StrCat("layer ", layer, "/", layers_total_);
  }
  return absl::StrCat("layer ", layer);
}

std::string JobDisplay::StatusLineLocked(absl::Time now) const {
  const absl::Duration total = start_.has_value() ? now - *start_ : absl::ZeroDuration();
  if (state_ != v1::Job::RUNNING) {
    const std::string state = state_ == v1::Job::STATE_UNSPECIFIED
                                  ? "waiting for events"
                                  : absl::AsciiStrToLower(v1::Job::State_Name(state_));
    return absl::StrCat("job ", job_id_, " ", state, "  ", HumanDuration(total));
  }
  if (finishing_)
    return absl::StrCat("job ", job_id_, " storing the model  total ", HumanDuration(total));
  const absl::Duration in_layer =
      layer_start_.has_value() ? now - *layer_start_ : absl::ZeroDuration();
  std::string what;
  double fraction = layer_fraction_;
  if (phase_ == v1::Progress::TRAIN) {
    what = absl::StrCat("epoch ", epoch_);
    fraction = phase_fraction_;
  } else if (layer_ > 0) {
    what = LayerLabelLocked(layer_);
  } else {
    what = absl::StrCat("job ", job_id_);
  }
  const std::string phase = phase_ == v1::Progress::PHASE_UNSPECIFIED
                                ? "starting     "
                                : absl::StrFormat("%-8s %3.0f%%", PhaseName(phase_),
                                                  100 * std::clamp(phase_fraction_, 0.0, 1.0));
  return absl::StrFormat("%s %s %s  %s  total %s", what, ProgressBar(fraction, 24), phase,
                         HumanDuration(in_layer), HumanDuration(total));
}

std::string XmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
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
        out += "&apos;";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') break;
        out += c;
    }
  }
  return out;
}

std::vector<int> LogDecades(double lo, double hi) {
  int first = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
  int last = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
  if (last <= first) last = first + 1;
  std::vector<int> decades;
  for (int e = first; e <= last; ++e) decades.push_back(e);
  return decades;
}

std::string RenderSvg(const Chart& chart) {
  constexpr double kOuter = 16, kMarginLeft = 74, kPlotW = 360, kPlotH = 280, kGap = 40;
  constexpr double kTop = 100, kBelowPlot = 58, kLegendH = 40;
  const size_t n = std::max<size_t>(1, chart.panels.size());
  const double width = 2 * kOuter + static_cast<double>(n) * (kMarginLeft + kPlotW) +
                       static_cast<double>(n - 1) * kGap;
  const double height = kTop + kPlotH + kBelowPlot + kLegendH + kOuter;

  std::string svg;
  absl::StrAppend(&svg, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"", Num(width),
                  "\" height=\"", Num(height), "\" viewBox=\"0 0 ", Num(width), " ", Num(height),
                  "\" font-family=\"", kFont, "\">\n");
  absl::StrAppend(&svg, "<title>", XmlEscape(chart.title), "</title>\n");
  absl::StrAppend(&svg, "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n");
  absl::StrAppend(&svg, "<text class=\"title\" x=\"", Num(width / 2),
                  "\" y=\"32\" text-anchor=\"middle\" font-size=\"19\" font-weight=\"600\" "
                  "fill=\"#222\">",
                  XmlEscape(chart.title), "</text>\n");
  if (!chart.subtitle.empty()) {
    absl::StrAppend(&svg, "<text class=\"subtitle\" x=\"", Num(width / 2),
                    "\" y=\"54\" text-anchor=\"middle\" font-size=\"12.5\" fill=\"#666\">",
                    XmlEscape(chart.subtitle), "</text>\n");
  }

  for (size_t i = 0; i < chart.panels.size(); ++i) {
    const PlotPanel& panel = chart.panels[i];
    const double left =
        kOuter + static_cast<double>(i) * (kMarginLeft + kPlotW + kGap) + kMarginLeft;
    const double top = kTop;
    double lo = std::numeric_limits<double>::infinity(), hi = 0;
    int xmin = std::numeric_limits<int>::max(), xmax = std::numeric_limits<int>::min();
    for (const PlotSeries& s : panel.series) {
      for (const auto& p : s.points) {
        if (!Plottable(p)) continue;
        lo = std::min(lo, p.second);
        hi = std::max(hi, p.second);
        xmin = std::min(xmin, static_cast<int>(std::floor(p.first)));
        xmax = std::max(xmax, static_cast<int>(std::ceil(p.first)));
      }
    }
    const bool empty = hi <= 0;
    if (empty) {
      lo = 0.1;
      hi = 10;
      xmin = 1;
      xmax = 1;
    }
    const std::vector<int> decades = LogDecades(lo, hi);
    const double e0 = decades.front(), e1 = decades.back();
    auto ypos = [&](double v) { return top + kPlotH * (e1 - std::log10(v)) / (e1 - e0); };
    const double x_lo = xmin - 0.5, x_span = xmax - xmin + 1;
    auto xpos = [&](double v) { return left + kPlotW * (v - x_lo) / x_span; };

    absl::StrAppend(&svg, "<g class=\"panel\">\n");
    absl::StrAppend(&svg, "<text class=\"panel-title\" x=\"", Num(left + kPlotW / 2), "\" y=\"",
                    Num(top - 14), "\" text-anchor=\"middle\" font-size=\"14\" fill=\"#333\">",
                    XmlEscape(panel.title), "</text>\n");
    absl::StrAppend(&svg, "<rect class=\"plot-area\" x=\"", Num(left), "\" y=\"", Num(top),
                    "\" width=\"", Num(kPlotW), "\" height=\"", Num(kPlotH),
                    "\" fill=\"#fcfcfc\" stroke=\"#bbbbbb\"/>\n");
    // Minor grid (2..9 x 10^e) while there are few decades; more would only add clutter.
    const bool minor = decades.size() <= 5;
    for (int e : decades) {
      if (minor && e < decades.back()) {
        for (int k = 2; k <= 9; ++k) {
          const double y = ypos(k * std::pow(10.0, e));
          absl::StrAppend(&svg, "<line class=\"grid minor\" x1=\"", Num(left), "\" x2=\"",
                          Num(left + kPlotW), "\" y1=\"", Num(y), "\" y2=\"", Num(y),
                          "\" stroke=\"#f0f0f0\"/>\n");
        }
      }
    }
    const int label_every = static_cast<int>(decades.size() + 7) / 8;
    for (size_t d = 0; d < decades.size(); ++d) {
      const double y = ypos(std::pow(10.0, decades[d]));
      absl::StrAppend(&svg, "<line class=\"grid major\" x1=\"", Num(left), "\" x2=\"",
                      Num(left + kPlotW), "\" y1=\"", Num(y), "\" y2=\"", Num(y),
                      "\" stroke=\"#dddddd\"/>\n");
      absl::StrAppend(&svg, "<line class=\"tick y-tick\" x1=\"", Num(left - 6), "\" x2=\"",
                      Num(left), "\" y1=\"", Num(y), "\" y2=\"", Num(y), "\" stroke=\"#555\"/>\n");
      if (d % static_cast<size_t>(label_every) == 0) {
        absl::StrAppend(&svg, "<text class=\"tick-label y-tick-label\" x=\"", Num(left - 9),
                        "\" y=\"", Num(y + 4),
                        "\" text-anchor=\"end\" font-size=\"11\" "
                        "fill=\"#444\">",
                        XmlEscape(DecadeLabel(decades[d])), "</text>\n");
      }
    }
    std::map<int, std::string> tick_labels(panel.x_tick_labels.begin(), panel.x_tick_labels.end());
    const double spacing = kPlotW / x_span;
    const int x_every = std::max(1, static_cast<int>(std::ceil(28 / spacing)));
    for (int x = xmin; x <= xmax; ++x) {
      const double px = xpos(x);
      absl::StrAppend(&svg, "<line class=\"tick x-tick\" x1=\"", Num(px), "\" x2=\"", Num(px),
                      "\" y1=\"", Num(top + kPlotH), "\" y2=\"", Num(top + kPlotH + 6),
                      "\" stroke=\"#555\"/>\n");
      if ((x - xmin) % x_every != 0 && x != xmax) continue;
      std::string label = absl::StrCat(x);
      if (auto it = tick_labels.find(x); it != tick_labels.end()) {
        label = it->second;
        // A long label that would run into its neighbours is cut to its first letter.
        if (static_cast<double>(label.size()) * 6.5 > spacing * x_every && !label.empty()) {
          label = label.substr(0, 1);
        }
      }
      absl::StrAppend(&svg, "<text class=\"tick-label x-tick-label\" x=\"", Num(px), "\" y=\"",
                      Num(top + kPlotH + 20),
                      "\" text-anchor=\"middle\" font-size=\"11\" "
                      "fill=\"#444\">",
                      XmlEscape(label), "</text>\n");
    }
    absl::StrAppend(&svg, "<text class=\"axis-label\" x=\"", Num(left + kPlotW / 2), "\" y=\"",
                    Num(top + kPlotH + 42),
                    "\" text-anchor=\"middle\" font-size=\"12.5\" "
                    "fill=\"#333\">",
                    XmlEscape(panel.x_label), "</text>\n");
    const double ylabel_x = left - 56, ylabel_y = top + kPlotH / 2;
    absl::StrAppend(&svg, "<text class=\"axis-label\" x=\"", Num(ylabel_x), "\" y=\"",
                    Num(ylabel_y), "\" transform=\"rotate(-90 ", Num(ylabel_x), " ", Num(ylabel_y),
                    ")\" text-anchor=\"middle\" font-size=\"12.5\" "
                    "fill=\"#333\">",
                    XmlEscape(panel.y_label), "</text>\n");
    if (empty) {
      absl::StrAppend(&svg, "<text class=\"no-data\" x=\"", Num(left + kPlotW / 2), "\" y=\"",
                      Num(top + kPlotH / 2),
                      "\" text-anchor=\"middle\" font-size=\"13\" "
                      "fill=\"#999\">no data yet</text>\n");
    }
    for (const PlotSeries& s : panel.series) {
      std::vector<std::pair<double, double>> points;
      for (const auto& p : s.points) {
        if (Plottable(p)) points.emplace_back(xpos(p.first), ypos(p.second));
      }
      if (points.empty()) continue;
      const std::string name = absl::StrCat(panel.title, ": ", s.name);
      std::vector<std::string> coords;
      for (const auto& p : points) coords.push_back(absl::StrCat(Num(p.first), ",", Num(p.second)));
      absl::StrAppend(
          &svg, "<g class=\"curve\">\n<polyline class=\"series\" data-series=\"", XmlEscape(name),
          "\" points=\"", absl::StrJoin(coords, " "), "\" fill=\"none\" stroke=\"",
          XmlEscape(s.color),
          "\" stroke-width=\"2.2\" stroke-linejoin=\"round\" stroke-linecap=\"round\"",
          s.dash.empty() ? "" : absl::StrCat(" stroke-dasharray=\"", XmlEscape(s.dash), "\""),
          "/>\n");
      size_t k = 0;
      for (const auto& p : s.points) {
        if (!Plottable(p)) continue;
        absl::StrAppend(
            &svg, "<circle class=\"marker\" cx=\"", Num(points[k].first), "\" cy=\"",
            Num(points[k].second), "\" r=\"3.6\" fill=\"", XmlEscape(s.color),
            "\" stroke=\"#ffffff\" stroke-width=\"1.2\"><title>",
            XmlEscape(absl::StrCat(name, " at ", p.first, ": ", absl::StrFormat("%.6g", p.second))),
            "</title></circle>\n");
        ++k;
      }
      absl::StrAppend(&svg, "</g>\n");
    }
    absl::StrAppend(&svg, "</g>\n");
  }

  // One legend for all panels: each series name once, in first-seen order.
  std::vector<const PlotSeries*> legend;
  for (const PlotPanel& panel : chart.panels) {
    for (const PlotSeries& s : panel.series) {
      if (std::none_of(legend.begin(), legend.end(),
                       [&](const PlotSeries* l) { return l->name == s.name; })) {
        legend.push_back(&s);
      }
    }
  }
  if (!legend.empty()) {
    constexpr double kEntryW = 150;
    const double legend_y = kTop + kPlotH + kBelowPlot + kLegendH / 2;
    double x = width / 2 - kEntryW * static_cast<double>(legend.size()) / 2;
    absl::StrAppend(&svg, "<g class=\"legend\">\n");
    for (const PlotSeries* s : legend) {
      absl::StrAppend(
          &svg, "<line x1=\"", Num(x), "\" x2=\"", Num(x + 28), "\" y1=\"", Num(legend_y),
          "\" y2=\"", Num(legend_y), "\" stroke=\"", XmlEscape(s->color), "\" stroke-width=\"2.2\"",
          s->dash.empty() ? "" : absl::StrCat(" stroke-dasharray=\"", XmlEscape(s->dash), "\""),
          "/>\n");
      absl::StrAppend(&svg, "<circle cx=\"", Num(x + 14), "\" cy=\"", Num(legend_y),
                      "\" r=\"3.6\" fill=\"", XmlEscape(s->color),
                      "\" stroke=\"#ffffff\" stroke-width=\"1.2\"/>\n");
      absl::StrAppend(&svg, "<text class=\"legend-label\" x=\"", Num(x + 36), "\" y=\"",
                      Num(legend_y + 4), "\" font-size=\"12.5\" fill=\"#333\">", XmlEscape(s->name),
                      "</text>\n");
      x += kEntryW;
    }
    absl::StrAppend(&svg, "</g>\n");
  }
  absl::StrAppend(&svg, "</svg>\n");
  return svg;
}

Chart CollapseChart(const std::vector<v1::LayerReport>& reports, std::string title,
                    std::string subtitle) {
  struct Curve {
    const char* name;
    const char* color;
    const char* dash;
  };
  // Colorblind-safe (Okabe-Ito) with distinct dash patterns for greyscale print.
  static constexpr Curve kCurves[] = {
      {"input", "#0072B2", ""}, {"projected", "#E69F00", "7 4"}, {"features", "#009E73", "2 3"}};
  Chart chart;
  chart.title = std::move(title);
  chart.subtitle = std::move(subtitle);
  for (int metric = 0; metric < 2; ++metric) {
    PlotPanel panel;
    panel.title =
        metric == 0 ? "nc1 = tr(\u03A3_W) / tr(\u03A3_B)" : "nc2: distance from a simplex ETF";
    panel.x_label = "layer";
    panel.y_label = metric == 0 ? "nc1 (log scale)" : "nc2 (log scale)";
    for (int c = 0; c < 3; ++c) {
      PlotSeries series;
      series.name = kCurves[c].name;
      series.color = kCurves[c].color;
      series.dash = kCurves[c].dash;
      for (const v1::LayerReport& r : reports) {
        const v1::CollapseMetrics* m = nullptr;
        if (c == 0) {
          m = &r.input();
        } else if (!r.readout()) {
          if (c == 1 && r.has_projected()) m = &r.projected();
          if (c == 2 && r.has_features()) m = &r.features();
        }
        if (m == nullptr) continue;
        series.points.emplace_back(r.layer(), metric == 0 ? m->nc1() : m->nc2());
      }
      panel.series.push_back(std::move(series));
    }
    for (const v1::LayerReport& r : reports) {
      if (r.readout()) panel.x_tick_labels.emplace_back(r.layer(), "readout");
    }
    chart.panels.push_back(std::move(panel));
  }
  return chart;
}

absl::Status WriteTextFile(const std::string& path, std::string_view text) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  file.write(text.data(), static_cast<std::streamsize>(text.size()));
  file.close();
  if (!file) {
    return absl::InternalError(absl::StrCat("writing ", path, " failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace drfm::client
