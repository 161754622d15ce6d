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

bool Plottable(const std::pair<double, double>& p, bool log) {
  return std::isfinite(p.first) && std::isfinite(p.second) && (!log || p.second > 0);
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
  // Two calls, not one with a ?: format: absl::StrFormat needs a constant format string (clang
  // checks it at compile time and rejects the conditional).
  return unit >= 2 ? absl::StrFormat("%.2f %s", bytes, kUnits[unit])
                   : absl::StrFormat("%.1f %s", bytes, kUnits[unit]);
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
  return absl::StrFormat("%-7s %10s %10s %7s %7s %7s\n", "epoch", "train_loss", "test_loss",
                         "train", "test", "sec");
}

std::string NetworkTableRow(const v1::NetworkReport& r) {
  return absl::StrFormat(
      "%-7d %10s %10s %7s %7s %7.2f\n", r.epoch(), FormatMetric(r.train_loss()),
      r.has_test_loss() ? FormatMetric(r.test_loss()) : "-", FormatAccuracy(r.train_accuracy()),
      r.has_test_accuracy() ? FormatAccuracy(r.test_accuracy()) : "-", r.seconds());
}

std::string FormatCorrelation(double value) {
  if (std::isnan(value)) return "-";
  return absl::StrFormat("%.4f", value);
}

std::string NetworkLayerTable(const v1::NetworkReport& report, std::string_view indent) {
  std::string out = absl::StrFormat("%s%-7s %9s %9s %9s %7s %7s %8s\n", indent, "layer", "nc1_none",
                                    "nc1_right", "nc1_left", "nfa", "nfa_raw", "sigma_1");
  for (const v1::NetworkLayerReport& l : report.layers()) {
    const std::string layer =
        l.output() ? absl::StrCat(l.layer(), " out") : absl::StrCat(l.layer());
    const bool left = !l.output() && l.has_left();
    absl::StrAppendFormat(
        &out, "%s%-7s %9s %9s %9s %7s %7s %8s\n", indent, layer, FormatMetric(l.none().nc1()),
        FormatMetric(l.right().nc1()), left ? FormatMetric(l.left().nc1()) : "-",
        FormatCorrelation(l.nfa_correlation()), FormatCorrelation(l.nfa_correlation_raw()),
        l.top_singular_values().empty() ? "-" : FormatMetric(l.top_singular_values(0)));
  }
  return out;
}

std::string NetworkReportBlock(const v1::NetworkReport& r, bool analysis) {
  std::string line;
  if (analysis) {
    line = absl::StrCat("measured: loss ", FormatMetric(r.train_loss()), "  accuracy ",
                        FormatAccuracy(r.train_accuracy()));
  } else {
    line = absl::StrCat("epoch ", r.epoch(), ": train loss ", FormatMetric(r.train_loss()),
                        " accuracy ", FormatAccuracy(r.train_accuracy()));
    if (r.has_test_loss() || r.has_test_accuracy()) absl::StrAppend(&line, "  test");
    if (r.has_test_loss()) absl::StrAppend(&line, " loss ", FormatMetric(r.test_loss()));
    if (r.has_test_accuracy()) {
      absl::StrAppend(&line, " accuracy ", FormatAccuracy(r.test_accuracy()));
    }
  }
  absl::StrAppend(&line, "  (", HumanDuration(absl::Seconds(r.seconds())), ")\n");
  return line + NetworkLayerTable(r, "  ");
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
  if (job.has_mlp_config()) {
    if (job.mlp_config().has_epochs()) epochs_total_ = job.mlp_config().epochs();
    if (job.mlp_config().has_depth()) network_layers_ = job.mlp_config().depth() + 1;
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
    if (state_ == v1::Job::QUEUED) {
      // Queued again (after a server restart): the job runs from the start and reports again.
      reports_.clear();
      network_reports_.clear();
    }
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
  } else if (event.has_progress() && IsNetworkLocked(event.progress().phase())) {
    // MLP and analysis: training stretches between measurements, and measurements layer by
    // layer. Plain output gets a line when training or a measurement starts.
    const v1::Progress& p = event.progress();
    const bool new_phase = p.phase() != phase_ || !layer_start_.has_value();
    if (new_phase) layer_start_ = t;
    phase_ = p.phase();
    phase_fraction_ = p.fraction();
    epoch_ = p.epoch();
    layer_ = p.layer();
    if (!interactive_ && new_phase) {
      const absl::Duration elapsed = start_.has_value() ? t - *start_ : absl::ZeroDuration();
      std::string what;
      if (p.phase() == v1::Progress::TRAIN) {
        what = absl::StrCat("training, epoch ", p.epoch());
        if (epochs_total_ > 0) absl::StrAppend(&what, " of ", epochs_total_);
      } else if (kind_ == v1::Job::ANALYSIS) {
        what = "measuring";
      } else {
        what = absl::StrCat("measuring at epoch ", p.epoch());
      }
      PrintLineLocked(absl::StrFormat("[%8s] %s", HumanDuration(elapsed), what));
    }
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
    network_reports_.push_back(event.network_report());
    std::string block = NetworkReportBlock(event.network_report(), kind_ == v1::Job::ANALYSIS);
    block.pop_back();
    // Training resumes (or the model is stored) now.
    layer_start_ = t;
    phase_ = v1::Progress::PHASE_UNSPECIFIED;
    phase_fraction_ = 0;
    PrintLineLocked(block);
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

std::vector<v1::NetworkReport> JobDisplay::network_reports() const {
  absl::MutexLock lock(&mu_);
  return network_reports_;
}

bool JobDisplay::IsNetworkLocked(v1::Progress::Phase phase) const {
  return kind_ == v1::Job::MLP || kind_ == v1::Job::ANALYSIS || phase == v1::Progress::TRAIN ||
         phase == v1::Progress::MEASURE;
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
    if (epochs_total_ > 0) absl::StrAppend(&what, "/", epochs_total_);
  } else if (phase_ == v1::Progress::MEASURE) {
    what = "measuring";
    if (layer_ > 0) absl::StrAppend(&what, " layer ", layer_);
    if (layer_ > 0 && network_layers_ > 0) absl::StrAppend(&what, "/", network_layers_);
    fraction = phase_fraction_;
  } else if (IsNetworkLocked(phase_)) {
    what = absl::StrCat("job ", job_id_);
    fraction = 0;
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

std::vector<double> LinearTicks(double lo, double hi, int max_ticks) {
  max_ticks = std::max(max_ticks, 2);
  if (!(hi - lo > 1e-12 * std::max(1.0, std::fabs(lo)))) {
    const double pad = 0.05 * std::max(1.0, std::fabs(lo));
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / (max_ticks - 1);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * magnitude;
  int64_t first = 0, last = 0;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * magnitude;
    first = static_cast<int64_t>(std::floor(lo / step + 1e-9));
    last = static_cast<int64_t>(std::ceil(hi / step - 1e-9));
    if (last - first + 1 <= max_ticks) break;
  }
  if (last == first) ++last;
  std::vector<double> ticks;
  for (int64_t k = first; k <= last; ++k) ticks.push_back(static_cast<double>(k) * step);
  return ticks;
}

std::vector<int> IntegerTicks(int lo, int hi, int max_ticks) {
  max_ticks = std::max(max_ticks, 3);
  auto floor_div = [](int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); };
  int64_t step = 1;
  for (int64_t magnitude = 1;; magnitude *= 10) {
    bool found = false;
    for (int64_t m : {1, 2, 5}) {
      step = m * magnitude;
      const int64_t count = floor_div(hi, step) - floor_div(lo - 1, step);
      if (count <= max_ticks) {
        found = true;
        break;
      }
    }
    if (found) break;
  }
  std::vector<int> ticks;
  for (int64_t k = floor_div(lo - 1, step) + 1; k * step <= hi; ++k) {
    ticks.push_back(static_cast<int>(k * step));
  }
  return ticks;
}

std::string RenderSvg(const Chart& chart) {
  constexpr double kOuter = 16, kMarginLeft = 74, kPlotW = 360, kPlotH = 280, kGap = 40;
  constexpr double kTop = 100, kBelowPlot = 58, kRowGap = 44, kLegendH = 40;
  const size_t n = std::max<size_t>(1, chart.panels.size());
  const size_t columns = chart.columns > 0 ? std::min(n, static_cast<size_t>(chart.columns)) : n;
  const size_t rows = (n + columns - 1) / columns;
  const double width = 2 * kOuter + static_cast<double>(columns) * (kMarginLeft + kPlotW) +
                       static_cast<double>(columns - 1) * kGap;
  const double plots_bottom = kTop + static_cast<double>(rows) * (kPlotH + kBelowPlot) +
                              static_cast<double>(rows - 1) * kRowGap;
  const double height = plots_bottom + kLegendH + kOuter;

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
    const bool log = panel.log_y;
    const size_t column = i % columns, row = i / columns;
    const double left =
        kOuter + static_cast<double>(column) * (kMarginLeft + kPlotW + kGap) + kMarginLeft;
    const double top = kTop + static_cast<double>(row) * (kPlotH + kBelowPlot + kRowGap);
    auto plottable = [log](const std::pair<double, double>& p) { return Plottable(p, log); };
    double lo = std::numeric_limits<double>::infinity();
    double hi = -std::numeric_limits<double>::infinity();
    int xmin = std::numeric_limits<int>::max(), xmax = std::numeric_limits<int>::min();
    for (const PlotSeries& s : panel.series) {
      for (const auto& p : s.points) {
        if (!plottable(p)) continue;
        lo = std::min(lo, p.second);
        hi = std::max(hi, p.second);
        xmin = std::min(xmin, static_cast<int>(std::floor(p.first)));
        xmax = std::max(xmax, static_cast<int>(std::ceil(p.first)));
      }
    }
    const bool empty = xmin > xmax;
    if (empty) {
      lo = log ? 0.1 : 0;
      hi = log ? 10 : 1;
      xmin = 1;
      xmax = 1;
    }
    // The y axis: decades (log) or nice ticks (linear), bottom to top.
    std::vector<double> y_ticks;
    std::vector<std::string> y_tick_labels;
    if (log) {
      for (int e : LogDecades(lo, hi)) {
        y_ticks.push_back(std::pow(10.0, e));
        y_tick_labels.push_back(DecadeLabel(e));
      }
    } else {
      y_ticks = LinearTicks(lo, hi);
      const double step = y_ticks[1] - y_ticks[0];
      const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
      for (double v : y_ticks) {
        std::string label = absl::StrFormat("%.*f", decimals, v);
        if (label[0] == '-' && label.find_first_not_of("-0.") == std::string::npos) {
          label.erase(0, 1);  // "0.0", not "-0.0"
        }
        y_tick_labels.push_back(label);
      }
    }
    const double y0 = log ? std::log10(y_ticks.front()) : y_ticks.front();
    const double y1 = log ? std::log10(y_ticks.back()) : y_ticks.back();
    auto ypos = [&](double v) {
      return top + kPlotH * (y1 - (log ? std::log10(v) : v)) / (y1 - y0);
    };
    const double pad = std::max(0.5, 0.03 * (xmax - xmin));
    const double x_lo = xmin - pad, x_span = xmax - xmin + 2 * pad;
    auto xpos = [&](double v) { return left + kPlotW * (v - x_lo) / x_span; };

    absl::StrAppend(&svg, "<g class=\"panel\">\n");
    absl::StrAppend(&svg, "<text class=\"panel-title\" x=\"", Num(left + kPlotW / 2), "\" y=\"",
                    Num(top - 14), "\" text-anchor=\"middle\" font-size=\"14\" fill=\"#333\">",
                    XmlEscape(panel.title), "</text>\n");
    absl::StrAppend(&svg, "<rect class=\"plot-area\" x=\"", Num(left), "\" y=\"", Num(top),
                    "\" width=\"", Num(kPlotW), "\" height=\"", Num(kPlotH),
                    "\" fill=\"#fcfcfc\" stroke=\"#bbbbbb\"/>\n");
    // Minor grid (2..9 x 10^e) while there are few decades; more would only add clutter.
    if (log && y_ticks.size() <= 5) {
      for (size_t d = 0; d + 1 < y_ticks.size(); ++d) {
        for (int k = 2; k <= 9; ++k) {
          const double y = ypos(k * y_ticks[d]);
          absl::StrAppend(&svg, "<line class=\"grid minor\" x1=\"", Num(left), "\" x2=\"",
                          Num(left + kPlotW), "\" y1=\"", Num(y), "\" y2=\"", Num(y),
                          "\" stroke=\"#f0f0f0\"/>\n");
        }
      }
    }
    const size_t label_every = log ? (y_ticks.size() + 7) / 8 : 1;
    for (size_t d = 0; d < y_ticks.size(); ++d) {
      const double y = ypos(y_ticks[d]);
      absl::StrAppend(&svg, "<line class=\"grid major\" x1=\"", Num(left), "\" x2=\"",
                      Num(left + kPlotW), "\" y1=\"", Num(y), "\" y2=\"", Num(y),
                      "\" stroke=\"#dddddd\"/>\n");
      absl::StrAppend(&svg, "<line class=\"tick y-tick\" x1=\"", Num(left - 6), "\" x2=\"",
                      Num(left), "\" y1=\"", Num(y), "\" y2=\"", Num(y), "\" stroke=\"#555\"/>\n");
      if (d % label_every == 0) {
        absl::StrAppend(&svg, "<text class=\"tick-label y-tick-label\" x=\"", Num(left - 9),
                        "\" y=\"", Num(y + 4),
                        "\" text-anchor=\"end\" font-size=\"11\" "
                        "fill=\"#444\">",
                        XmlEscape(y_tick_labels[d]), "</text>\n");
      }
    }
    // x ticks: the multiples of a nice step, and every x with a label of its own.
    std::map<int, std::string> tick_labels;
    for (const auto& [x, label] : panel.x_tick_labels) {
      if (x >= xmin && x <= xmax) tick_labels[x] = label;
    }
    std::vector<int> x_ticks = IntegerTicks(xmin, xmax, 8);
    for (const auto& [x, label] : tick_labels) x_ticks.push_back(x);
    std::sort(x_ticks.begin(), x_ticks.end());
    x_ticks.erase(std::unique(x_ticks.begin(), x_ticks.end()), x_ticks.end());
    for (size_t k = 0; k < x_ticks.size(); ++k) {
      const int x = x_ticks[k];
      const double px = xpos(x);
      absl::StrAppend(&svg, "<line class=\"tick x-tick\" x1=\"", Num(px), "\" x2=\"", Num(px),
                      "\" y1=\"", Num(top + kPlotH), "\" y2=\"", Num(top + kPlotH + 6),
                      "\" stroke=\"#555\"/>\n");
      std::string label = absl::StrCat(x);
      if (auto it = tick_labels.find(x); it != tick_labels.end()) {
        label = it->second;
        // A long label that would run into its neighbours is cut to its first letter.
        double room = kPlotW;
        if (k > 0) room = std::min(room, px - xpos(x_ticks[k - 1]));
        if (k + 1 < x_ticks.size()) room = std::min(room, xpos(x_ticks[k + 1]) - px);
        if (static_cast<double>(label.size()) * 6.5 > room && !label.empty()) {
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
    struct EndLabel {
      double x, y;
      const PlotSeries* series;
    };
    std::vector<EndLabel> end_labels;
    for (const PlotSeries& s : panel.series) {
      std::vector<std::pair<double, double>> points;
      for (const auto& p : s.points) {
        if (plottable(p)) points.emplace_back(xpos(p.first), ypos(p.second));
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
        if (!plottable(p)) continue;
        absl::StrAppend(
            &svg, "<circle class=\"marker\" cx=\"", Num(points[k].first), "\" cy=\"",
            Num(points[k].second), "\" r=\"3.6\" fill=\"", XmlEscape(s.color),
            "\" stroke=\"#ffffff\" stroke-width=\"1.2\"><title>",
            XmlEscape(absl::StrCat(name, " at ", p.first, ": ", absl::StrFormat("%.6g", p.second))),
            "</title></circle>\n");
        ++k;
      }
      if (!s.end_label.empty()) {
        end_labels.push_back({points.back().first + 7, points.back().second + 4, &s});
      }
      absl::StrAppend(&svg, "</g>\n");
    }
    // End labels top to bottom, pushed apart where curves end close together, kept in the plot.
    std::stable_sort(end_labels.begin(), end_labels.end(),
                     [](const EndLabel& a, const EndLabel& b) { return a.y < b.y; });
    constexpr double kLabelGap = 12;
    for (size_t k = 1; k < end_labels.size(); ++k) {
      end_labels[k].y = std::max(end_labels[k].y, end_labels[k - 1].y + kLabelGap);
    }
    if (!end_labels.empty() && end_labels.back().y > top + kPlotH) {
      const double shift = end_labels.back().y - (top + kPlotH);
      for (EndLabel& label : end_labels) label.y -= shift;
    }
    for (const EndLabel& label : end_labels) {
      absl::StrAppend(&svg, "<text class=\"end-label\" x=\"", Num(label.x), "\" y=\"", Num(label.y),
                      "\" font-size=\"11\" fill=\"", XmlEscape(label.series->color), "\">",
                      XmlEscape(label.series->end_label), "</text>\n");
    }
    absl::StrAppend(&svg, "</g>\n");
  }

  // One legend for all panels: each series name once, in first-seen order; curves labelled at
  // their ends are not repeated here.
  std::vector<const PlotSeries*> legend;
  for (const PlotPanel& panel : chart.panels) {
    for (const PlotSeries& s : panel.series) {
      if (s.end_label.empty() &&
          std::none_of(legend.begin(), legend.end(),
                       [&](const PlotSeries* l) { return l->name == s.name; })) {
        legend.push_back(&s);
      }
    }
  }
  if (!legend.empty()) {
    // Each entry as wide as its label (about 7 px a character at 12.5 px) and at least 150.
    std::vector<double> entry_widths;
    double total = 0;
    for (const PlotSeries* s : legend) {
      entry_widths.push_back(
          std::max(150.0, 56 + 7.0 * static_cast<double>(DisplayWidth(s->name))));
      total += entry_widths.back();
    }
    const double legend_y = plots_bottom + kLegendH / 2;
    double x = width / 2 - total / 2;
    size_t entry = 0;
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
      x += entry_widths[entry++];
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

Chart NetworkChart(const std::vector<v1::NetworkReport>& reports, std::string title,
                   std::string subtitle) {
  struct Curve {
    const char* name;
    const char* color;
    const char* dash;
  };
  // As CollapseChart: Okabe-Ito colors with distinct dashes for the three representations.
  static constexpr Curve kCurves[] = {{"none (input)", "#0072B2", ""},
                                      {"right (W h)", "#E69F00", "7 4"},
                                      {"left (ReLU(W h))", "#009E73", "2 3"}};
  // Colors of the per-layer NFA curves, repeated with a dash once they run out.
  static constexpr const char* kLayerColors[] = {"#0072B2", "#E69F00", "#009E73", "#CC79A7",
                                                 "#D55E00", "#56B4E9", "#000000", "#999999"};
  constexpr int kLayerColorCount = sizeof(kLayerColors) / sizeof(kLayerColors[0]);
  auto metrics_of = [](const v1::NetworkLayerReport& l, int c) -> const v1::CollapseMetrics* {
    if (c == 0) return &l.none();
    if (c == 1) return &l.right();
    return !l.output() && l.has_left() ? &l.left() : nullptr;
  };
  auto nc1_series = [&](int c) {
    PlotSeries series;
    series.name = kCurves[c].name;
    series.color = kCurves[c].color;
    series.dash = kCurves[c].dash;
    return series;
  };

  Chart chart;
  chart.title = std::move(title);
  chart.subtitle = std::move(subtitle);
  chart.columns = 3;
  if (reports.size() >= 2) {
    // Across epochs: which layers there are (and which is the output), from every measurement.
    std::map<int, bool> layers;
    for (const v1::NetworkReport& r : reports) {
      for (const v1::NetworkLayerReport& l : r.layers()) layers[l.layer()] = l.output();
    }
    PlotPanel nfa;
    nfa.title = "NFA: corr(W^T W, AGOP^1/2)";
    nfa.x_label = "epoch";
    nfa.y_label = "Pearson correlation";
    nfa.log_y = false;
    for (const auto& [layer, output] : layers) {
      PlotPanel panel;
      panel.title =
          output ? absl::StrCat("layer ", layer, " (output)") : absl::StrCat("layer ", layer);
      panel.x_label = "epoch";
      panel.y_label = "nc1 (log scale)";
      for (int c = 0; c < 3; ++c) panel.series.push_back(nc1_series(c));
      PlotSeries correlation;
      correlation.name = panel.title;
      correlation.end_label = output ? "output" : absl::StrCat("layer ", layer);
      const int color = (layer - 1) % kLayerColorCount;
      correlation.color = kLayerColors[color < 0 ? 0 : color];
      if ((layer - 1) / kLayerColorCount % 2 == 1) correlation.dash = "6 3";
      for (const v1::NetworkReport& r : reports) {
        for (const v1::NetworkLayerReport& l : r.layers()) {
          if (l.layer() != layer) continue;
          for (int c = 0; c < 3; ++c) {
            if (const v1::CollapseMetrics* m = metrics_of(l, c)) {
              panel.series[c].points.emplace_back(r.epoch(), m->nc1());
            }
          }
          correlation.points.emplace_back(r.epoch(), l.nfa_correlation());
        }
      }
      chart.panels.push_back(std::move(panel));
      nfa.series.push_back(std::move(correlation));
    }
    chart.panels.push_back(std::move(nfa));
    return chart;
  }
  // One measurement (or none yet): across layers.
  PlotPanel nc1;
  nc1.title = "nc1 by layer";
  nc1.x_label = "layer";
  nc1.y_label = "nc1 (log scale)";
  for (int c = 0; c < 3; ++c) nc1.series.push_back(nc1_series(c));
  PlotPanel nfa;
  nfa.title = "NFA correlation by layer";
  nfa.x_label = "layer";
  nfa.y_label = "Pearson correlation";
  nfa.log_y = false;
  PlotSeries sqrt_agop{"nfa: W^T W vs AGOP^1/2", "#CC79A7", "", {}, ""};
  PlotSeries raw_agop{"nfa_raw: W^T W vs AGOP", "#D55E00", "5 3", {}, ""};
  if (!reports.empty()) {
    for (const v1::NetworkLayerReport& l : reports.front().layers()) {
      for (int c = 0; c < 3; ++c) {
        if (const v1::CollapseMetrics* m = metrics_of(l, c)) {
          nc1.series[c].points.emplace_back(l.layer(), m->nc1());
        }
      }
      sqrt_agop.points.emplace_back(l.layer(), l.nfa_correlation());
      raw_agop.points.emplace_back(l.layer(), l.nfa_correlation_raw());
      if (l.output()) {
        nc1.x_tick_labels.emplace_back(l.layer(), "output");
        nfa.x_tick_labels.emplace_back(l.layer(), "output");
      }
    }
  }
  nfa.series.push_back(std::move(sqrt_agop));
  nfa.series.push_back(std::move(raw_agop));
  chart.panels.push_back(std::move(nc1));
  chart.panels.push_back(std::move(nfa));
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
