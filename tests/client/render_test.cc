// Tests of the renderers (client/render.h): table alignment, units, progress bars, the layer
// table and the MLP measurement tables, the live job display in both modes (Deep RFM and MLP),
// and the SVG charts: well-formed XML (checked by a small strict parser below), one series per
// curve with the expected points, decade ticks on the log axis, nice ticks on linear and epoch
// axes, panels in rows, and escaped text.
#include "client/render.h"

#include <cctype>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace drfm::client {
namespace {

// A parsed XML element.
struct Element {
  std::string name;
  std::map<std::string, std::string> attributes;  // values with entities decoded
  std::vector<Element> children;
  std::string text;  // character data directly inside, entities decoded
};

// A strict parser for the XML subset an SVG writer produces: an optional <?xml ...?>
// declaration, comments, elements with quoted attributes, character data with the five named
// entities and numeric references. Fails on anything else: an unescaped '<' or '&', a bad
// entity, a duplicate attribute, mismatched or unclosed tags, text after the root.
class XmlParser {
 public:
  explicit XmlParser(std::string_view text) : s_(text) {}

  bool Parse(Element* root, std::string* error) {
    SkipSpace();
    if (s_.substr(i_, 5) == "<?xml") {
      const size_t end = s_.find("?>", i_);
      if (end == std::string_view::npos) return Fail("unterminated declaration", error);
      i_ = end + 2;
    }
    SkipMisc();
    if (!ParseElement(root, error)) return false;
    SkipMisc();
    if (i_ != s_.size()) return Fail("content after the root element", error);
    return true;
  }

 private:
  bool Fail(const std::string& what, std::string* error) {
    *error = what + " at offset " + std::to_string(i_);
    return false;
  }
  void SkipSpace() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  void SkipMisc() {
    while (true) {
      SkipSpace();
      if (s_.substr(i_, 4) != "<!--") return;
      const size_t end = s_.find("-->", i_);
      i_ = end == std::string_view::npos ? s_.size() : end + 3;
    }
  }
  bool ParseName(std::string* name) {
    const size_t start = i_;
    while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '-' ||
                              s_[i_] == '_' || s_[i_] == ':' || s_[i_] == '.')) {
      ++i_;
    }
    *name = std::string(s_.substr(start, i_ - start));
    return !name->empty() && !std::isdigit(static_cast<unsigned char>((*name)[0]));
  }
  // Decodes character data up to `stop` (exclusive); '<' is never allowed inside.
  bool Decode(std::string_view raw, std::string* out, std::string* error) {
    for (size_t k = 0; k < raw.size(); ++k) {
      if (raw[k] == '<') return Fail("unescaped '<'", error);
      if (raw[k] != '&') {
        *out += raw[k];
        continue;
      }
      const size_t semi = raw.find(';', k);
      if (semi == std::string_view::npos) return Fail("unterminated entity", error);
      const std::string_view entity = raw.substr(k + 1, semi - k - 1);
      static const std::map<std::string_view, char> kNamed = {
          {"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
      if (auto it = kNamed.find(entity); it != kNamed.end()) {
        *out += it->second;
      } else if (entity.size() > 1 && entity[0] == '#') {
        uint32_t code = 0;
        const bool hex = entity[1] == 'x';
        const std::string digits(entity.substr(hex ? 2 : 1));
        if (digits.empty() ||
            !(hex ? absl::SimpleHexAtoi(digits, &code) : absl::SimpleAtoi(digits, &code))) {
          return Fail("bad character reference", error);
        }
        *out += '?';
      } else {
        return Fail("unknown entity &" + std::string(entity) + ";", error);
      }
      k = semi;
    }
    return true;
  }
  bool ParseElement(Element* e, std::string* error) {
    if (i_ >= s_.size() || s_[i_] != '<') return Fail("expected '<'", error);
    ++i_;
    if (!ParseName(&e->name)) return Fail("bad element name", error);
    while (true) {
      SkipSpace();
      if (i_ >= s_.size()) return Fail("unterminated start tag", error);
      if (s_.substr(i_, 2) == "/>") {
        i_ += 2;
        return true;
      }
      if (s_[i_] == '>') {
        ++i_;
        break;
      }
      std::string attr;
      if (!ParseName(&attr)) return Fail("bad attribute name", error);
      SkipSpace();
      if (i_ >= s_.size() || s_[i_] != '=') return Fail("expected '='", error);
      ++i_;
      SkipSpace();
      if (i_ >= s_.size() || (s_[i_] != '"' && s_[i_] != '\'')) {
        return Fail("unquoted attribute", error);
      }
      const char quote = s_[i_++];
      const size_t end = s_.find(quote, i_);
      if (end == std::string_view::npos) return Fail("unterminated attribute", error);
      std::string value;
      if (!Decode(s_.substr(i_, end - i_), &value, error)) return false;
      if (!e->attributes.emplace(attr, value).second) return Fail("duplicate attribute", error);
      i_ = end + 1;
    }
    while (true) {
      const size_t lt = s_.find('<', i_);
      if (lt == std::string_view::npos) return Fail("unclosed <" + e->name + ">", error);
      if (!Decode(s_.substr(i_, lt - i_), &e->text, error)) return false;
      i_ = lt;
      if (s_.substr(i_, 4) == "<!--") {
        SkipMisc();
        continue;
      }
      if (s_.substr(i_, 2) == "</") {
        i_ += 2;
        std::string name;
        if (!ParseName(&name) || name != e->name) return Fail("mismatched </" + name + ">", error);
        SkipSpace();
        if (i_ >= s_.size() || s_[i_] != '>') return Fail("bad end tag", error);
        ++i_;
        return true;
      }
      e->children.emplace_back();
      if (!ParseElement(&e->children.back(), error)) return false;
    }
  }

  std::string_view s_;
  size_t i_ = 0;
};

void Collect(const Element& e, const std::string& name, std::vector<const Element*>* out) {
  if (e.name == name) out->push_back(&e);
  for (const Element& child : e.children) Collect(child, name, out);
}

std::vector<const Element*> FindAll(const Element& root, const std::string& name,
                                    const std::string& class_contains = "") {
  std::vector<const Element*> all, matching;
  Collect(root, name, &all);
  for (const Element* e : all) {
    auto it = e->attributes.find("class");
    if (class_contains.empty() ||
        (it != e->attributes.end() && absl::StrContains(it->second, class_contains))) {
      matching.push_back(e);
    }
  }
  return matching;
}

Element ParseSvg(const std::string& svg) {
  Element root;
  std::string error;
  EXPECT_TRUE(XmlParser(svg).Parse(&root, &error)) << error << "\n" << svg;
  return root;
}

// Layer reports of a fit with `layers` feature layers and its readout; nc values fall by a
// factor 3 per layer from nc1 = 2 (input) so they span a few decades.
std::vector<v1::LayerReport> Reports(int layers) {
  std::vector<v1::LayerReport> reports;
  double scale = 1;
  for (int l = 1; l <= layers + 1; ++l, scale /= 3) {
    v1::LayerReport r;
    r.set_layer(l);
    r.set_readout(l == layers + 1);
    r.set_train_accuracy(1.0);
    r.set_test_accuracy(0.84);
    r.mutable_input()->set_nc1(2 * scale);
    r.mutable_input()->set_nc2(0.2 * scale);
    if (!r.readout()) {
      r.mutable_projected()->set_nc1(0.5 * scale);
      r.mutable_projected()->set_nc2(0.1 * scale);
      r.mutable_features()->set_nc1(0.7 * scale);
      r.mutable_features()->set_nc2(0.08 * scale);
    }
    r.mutable_phase_seconds()->set_kernel(1.5);
    r.mutable_phase_seconds()->set_agop(1.09);
    reports.push_back(r);
  }
  return reports;
}

TEST(TableTest, AlignsColumnsToTheWidestCell) {
  Table table({"NAME", "ROWS", "CREATED"}, {Table::Align::kLeft, Table::Align::kRight});
  table.AddRow({"fashion-mnist:train", "60000", "2024-05-01"});
  table.AddRow({"toy", "7"});  // short row: padded
  EXPECT_EQ(table.Render(),
            "NAME                  ROWS  CREATED\n"
            "fashion-mnist:train  60000  2024-05-01\n"
            "toy                      7\n");
}

TEST(TableTest, MeasuresUtf8ByCodePoints) {
  Table table({"A", "B"});
  table.AddRow({"\u03A3\u03A3", "x"});
  table.AddRow({"abc", "y"});
  const std::vector<std::string> lines = absl::StrSplit(table.Render(), '\n');
  EXPECT_EQ(lines[1], "\u03A3\u03A3   x");
  EXPECT_EQ(lines[2], "abc  y");
  EXPECT_EQ(DisplayWidth("\u03A3\u03A3"), 2u);
}

TEST(FormatTest, HumanUnits) {
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(188.2 * 1024 * 1024), "188.2 MiB");
  EXPECT_EQ(HumanDuration(absl::Milliseconds(850)), "850ms");
  EXPECT_EQ(HumanDuration(absl::Seconds(12.34)), "12.3s");
  EXPECT_EQ(HumanDuration(absl::Seconds(184)), "3m04s");
  EXPECT_EQ(HumanDuration(absl::Minutes(62)), "1h02m");
  EXPECT_EQ(HumanDuration(-absl::Seconds(3)), "0ms");
  EXPECT_EQ(FormatBytes(2.0 * 1024 * 1024 * 1024), "2.00 GiB");
  EXPECT_EQ(FormatFlops(111.8e9), "111.8 GFLOP");
  EXPECT_EQ(FormatMetric(1.76361), "1.7636");
  EXPECT_EQ(FormatMetric(1.234e-5), "1.23e-05");
  EXPECT_EQ(FormatMetric(0), "0");
}

TEST(FormatTest, ProgressBarFillsInProportion) {
  EXPECT_EQ(ProgressBar(0, 10), "[          ]");
  EXPECT_EQ(ProgressBar(0.5, 10), "[====>     ]");
  EXPECT_EQ(ProgressBar(1, 10), "[==========]");
  EXPECT_EQ(ProgressBar(7, 4), "[====]");
  EXPECT_EQ(ProgressBar(std::nan(""), 4), "[    ]");
  EXPECT_TRUE(absl::StartsWith(TransferLine("upload", 50, 100, absl::Seconds(1), 4),
                               "upload [=>  ]  50%  50 B / 100 B  50 B/s"));
}

TEST(LayerTableTest, RowsLineUpUnderTheHeader) {
  const std::string table = LayerTable(Reports(2));
  const std::vector<std::string> lines = absl::StrSplit(table, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(
      lines[0],
      "layer     nc1_in nc1_proj nc1_feat   nc2_in nc2_proj nc2_feat   train    test     sec");
  EXPECT_EQ(
      lines[1],
      "1         2.0000   0.5000   0.7000   0.2000   0.1000   0.0800  1.0000  0.8400    2.59");
  EXPECT_EQ(
      lines[3],
      "readout   0.2222        -        -   0.0222        -        -  1.0000  0.8400    2.59");
  for (const std::string& line : lines) EXPECT_EQ(line.size(), lines[0].size()) << line;
}

TEST(LayerTableTest, MissingTestAccuracyIsADash) {
  v1::LayerReport r = Reports(1)[0];
  r.clear_test_accuracy();
  EXPECT_TRUE(absl::StrContains(LayerTableRow(r), "1.0000       -"));
}

TEST(LayerFractionTest, AdvancesThroughThePhasesOfALayer) {
  double last = -1;
  for (auto phase : {v1::Progress::KERNEL, v1::Progress::SOLVE, v1::Progress::AGOP,
                     v1::Progress::PROJECT, v1::Progress::FEATURES, v1::Progress::METRICS}) {
    for (double f : {0.0, 0.5, 1.0}) {
      const double x = LayerFraction(phase, f, /*readout=*/false);
      EXPECT_GE(x, last);
      last = x;
    }
  }
  EXPECT_DOUBLE_EQ(last, 1.0);
  EXPECT_DOUBLE_EQ(LayerFraction(v1::Progress::SOLVE, 0.5, /*readout=*/true), 0.5);
  EXPECT_DOUBLE_EQ(LayerFraction(v1::Progress::TRAIN, 0.25, false), 0.25);
}

std::vector<v1::JobEvent> Events(int layers) {
  std::vector<v1::JobEvent> events;
  auto add = [&](v1::JobEvent e) {
    e.set_sequence(static_cast<int64_t>(events.size()) + 1);
    e.mutable_time()->set_seconds(1000 + e.sequence());
    events.push_back(e);
  };
  v1::JobEvent e;
  e.mutable_state_change()->set_state(v1::Job::QUEUED);
  add(e);
  e.mutable_state_change()->set_state(v1::Job::RUNNING);
  add(e);
  for (const v1::LayerReport& r : Reports(layers)) {
    for (auto phase : {v1::Progress::KERNEL, v1::Progress::SOLVE}) {
      v1::JobEvent p;
      p.mutable_progress()->set_layer(r.layer());
      p.mutable_progress()->set_phase(phase);
      p.mutable_progress()->set_fraction(0.5);
      add(p);
    }
    v1::JobEvent report;
    *report.mutable_layer_report() = r;
    add(report);
  }
  v1::JobEvent done;
  done.mutable_state_change()->set_state(v1::Job::SUCCEEDED);
  done.mutable_state_change()->mutable_model()->set_name("m");
  done.mutable_state_change()->mutable_model()->set_version(4);
  add(done);
  return events;
}

TEST(JobDisplayTest, WithoutATerminalPrintsPlainLinesAndGrowsTheTable) {
  std::ostringstream out;
  JobDisplay display(out, /*interactive=*/false, "job1");
  v1::Job job;
  job.set_layers_total(3);
  display.SetJob(job);
  for (const v1::JobEvent& e : Events(2)) display.OnEvent(e, absl::FromUnixSeconds(2000));
  display.Tick(absl::FromUnixSeconds(2001));  // no effect without a terminal
  display.Finish();
  const std::string text = out.str();
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_EQ(text.find('\033'), std::string::npos);
  const std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.front(), "job job1 QUEUED");
  EXPECT_EQ(lines[1], "job job1 RUNNING");
  EXPECT_TRUE(absl::StrContains(text, "layer 1/3 kernel"));
  EXPECT_TRUE(absl::StrContains(text, "readout 3/3 solve"));
  EXPECT_EQ(lines.back(), "job job1 SUCCEEDED after 10.0s: model m v4");
  // The table header once, then one row per layer, in order.
  std::vector<std::string> rows;
  for (const std::string& line : lines) {
    if (absl::StartsWith(line, "layer ") && absl::StrContains(line, "nc1_in")) rows.push_back("H");
    if (absl::StartsWith(line, "1  ") || absl::StartsWith(line, "2  ") ||
        absl::StartsWith(line, "readout  ")) {
      rows.push_back(line.substr(0, 1));
    }
  }
  EXPECT_EQ(rows, (std::vector<std::string>{"H", "1", "2", "r"}));
  EXPECT_EQ(display.reports().size(), 3u);
}

TEST(JobDisplayTest, OnATerminalRedrawsOneStatusLineAndClearsItAtTheEnd) {
  std::ostringstream out;
  JobDisplay display(out, /*interactive=*/true, "job1");
  v1::Job job;
  job.set_layers_total(3);
  display.SetJob(job);
  const std::vector<v1::JobEvent> events = Events(2);
  for (size_t i = 0; i < 4; ++i) display.OnEvent(events[i], absl::FromUnixSeconds(1010));
  display.Tick(absl::FromUnixSeconds(1012));
  std::string text = out.str();
  // The last drawn status line: layer 1, the solve phase, the elapsed times.
  const std::string status = text.substr(text.rfind("\r\033[K") + 4);
  EXPECT_TRUE(absl::StartsWith(status, "layer 1/3 [")) << status;
  EXPECT_TRUE(absl::StrContains(status, "solve")) << status;
  EXPECT_TRUE(absl::StrContains(status, "total 10.0s")) << status;
  EXPECT_EQ(status.find('\n'), std::string::npos);
  for (size_t i = 4; i < events.size(); ++i)
    display.OnEvent(events[i], absl::FromUnixSeconds(1020));
  display.Finish();
  text = out.str();
  EXPECT_TRUE(absl::EndsWith(text, "job job1 SUCCEEDED after 10.0s: model m v4\n"));
  EXPECT_TRUE(absl::StrContains(text, "\r\033[Kreadout "));  // rows are printed above the status
}

TEST(JobDisplayTest, AJobQueuedAgainStartsItsLayersOver) {
  std::ostringstream out;
  JobDisplay display(out, /*interactive=*/true, "job1");
  v1::Job job;
  job.set_layers_total(3);
  display.SetJob(job);
  std::vector<v1::JobEvent> events = Events(2);
  // QUEUED, RUNNING, layer 1 kernel; then the server restarts and queues the job again.
  events.resize(3);
  v1::JobEvent requeued;
  requeued.set_sequence(4);
  requeued.mutable_time()->set_seconds(1100);
  requeued.mutable_state_change()->set_state(v1::Job::QUEUED);
  requeued.mutable_state_change()->set_error("the server stopped; queued again");
  events.push_back(requeued);
  v1::JobEvent running = events[1];
  running.set_sequence(5);
  running.mutable_time()->set_seconds(1101);
  events.push_back(running);
  v1::JobEvent kernel = events[2];
  kernel.set_sequence(6);
  kernel.mutable_time()->set_seconds(1102);
  events.push_back(kernel);
  for (const v1::JobEvent& e : events) display.OnEvent(e, absl::FromUnixSeconds(1102));
  display.Tick(absl::FromUnixSeconds(1104));
  const std::string text = out.str();
  EXPECT_TRUE(absl::StrContains(text, "job job1 QUEUED: the server stopped; queued again"));
  const std::string status = text.substr(text.rfind("\r\033[K") + 4);
  EXPECT_TRUE(absl::StartsWith(status, "layer 1/3 [")) << status;
  EXPECT_TRUE(absl::StrContains(status, "2.0s  total 3.0s")) << status;  // from the new start
}

TEST(XmlEscapeTest, EscapesMarkupAndDropsControlCharacters) {
  EXPECT_EQ(XmlEscape("a<b>&\"c'\x01\td"), "a&lt;b&gt;&amp;&quot;c&apos;\td");
  EXPECT_EQ(XmlEscape("\u03A3"), "\u03A3");
}

TEST(LogDecadesTest, CoverTheRangeWithWholeDecades) {
  EXPECT_EQ(LogDecades(0.0123, 1.76), (std::vector<int>{-2, -1, 0, 1}));
  EXPECT_EQ(LogDecades(0.1, 1), (std::vector<int>{-1, 0}));
  EXPECT_EQ(LogDecades(0.5, 0.5), (std::vector<int>{-1, 0}));
  EXPECT_EQ(LogDecades(3e-6, 20), (std::vector<int>{-6, -5, -4, -3, -2, -1, 0, 1, 2}));
}

TEST(SvgTest, CollapsePlotIsWellFormedXmlWithTitleAxesAndLegend) {
  const std::string svg = RenderSvg(CollapseChart(Reports(3), "Deep RFM", "3 layers"));
  const Element root = ParseSvg(svg);
  EXPECT_EQ(root.name, "svg");
  EXPECT_EQ(root.attributes.at("xmlns"), "http://www.w3.org/2000/svg");
  EXPECT_EQ(FindAll(root, "text", "title").front()->text, "Deep RFM");
  EXPECT_EQ(FindAll(root, "g", "panel").size(), 2u);
  std::vector<std::string> axis_labels;
  for (const Element* e : FindAll(root, "text", "axis-label")) axis_labels.push_back(e->text);
  EXPECT_EQ(axis_labels,
            (std::vector<std::string>{"layer", "nc1 (log scale)", "layer", "nc2 (log scale)"}));
  std::vector<std::string> legend;
  for (const Element* e : FindAll(root, "text", "legend-label")) legend.push_back(e->text);
  EXPECT_EQ(legend, (std::vector<std::string>{"input", "projected", "features"}));
}

TEST(SvgTest, HasOneSeriesPerCurveWithAPointPerLayer) {
  const int layers = 3;
  const Element root = ParseSvg(RenderSvg(CollapseChart(Reports(layers), "t", "")));
  const std::vector<const Element*> series = FindAll(root, "polyline", "series");
  ASSERT_EQ(series.size(), 6u);
  std::map<std::string, size_t> points;
  for (const Element* s : series) {
    const std::vector<std::string> coords =
        absl::StrSplit(s->attributes.at("points"), ' ', absl::SkipEmpty());
    points[s->attributes.at("data-series")] = coords.size();
    // Layers go left to right.
    double last_x = -1;
    for (const std::string& c : coords) {
      double x;
      ASSERT_TRUE(absl::SimpleAtod(c.substr(0, c.find(',')), &x));
      EXPECT_GT(x, last_x);
      last_x = x;
    }
  }
  const std::string nc1 = "nc1 = tr(\u03A3_W) / tr(\u03A3_B): ";
  const std::string nc2 = "nc2: distance from a simplex ETF: ";
  EXPECT_EQ(points[nc1 + "input"], layers + 1u);  // the readout's input too
  EXPECT_EQ(points[nc1 + "projected"], static_cast<size_t>(layers));
  EXPECT_EQ(points[nc1 + "features"], static_cast<size_t>(layers));
  EXPECT_EQ(points[nc2 + "input"], layers + 1u);
  EXPECT_EQ(points[nc2 + "projected"], static_cast<size_t>(layers));
  EXPECT_EQ(points[nc2 + "features"], static_cast<size_t>(layers));
  EXPECT_EQ(FindAll(root, "circle", "marker").size(), 2u * (3 * layers + 1));
}

TEST(SvgTest, LogAxisHasATickAndLabelPerDecade) {
  // nc1 spans 2 .. 0.5/9 = 0.056 (decades -2..1); nc2 spans 0.2 .. 0.2/27 = 0.0074 (-3..0).
  const Element root = ParseSvg(RenderSvg(CollapseChart(Reports(3), "t", "")));
  const std::vector<const Element*> panels = FindAll(root, "g", "panel");
  ASSERT_EQ(panels.size(), 2u);
  std::vector<std::string> labels[2];
  for (int p = 0; p < 2; ++p) {
    EXPECT_EQ(FindAll(*panels[p], "line", "y-tick").size(), 4u);
    for (const Element* e : FindAll(*panels[p], "text", "y-tick-label"))
      labels[p].push_back(e->text);
  }
  EXPECT_EQ(labels[0], (std::vector<std::string>{"0.01", "0.1", "1", "10"}));
  EXPECT_EQ(labels[1], (std::vector<std::string>{"0.001", "0.01", "0.1", "1"}));
  // Ticks are evenly spaced (log scale) and increase upwards.
  std::vector<double> ys;
  for (const Element* e : FindAll(*panels[0], "line", "y-tick")) {
    double y;
    ASSERT_TRUE(absl::SimpleAtod(e->attributes.at("y1"), &y));
    ys.push_back(y);
  }
  for (size_t k = 1; k < ys.size(); ++k) {
    EXPECT_LT(ys[k], ys[k - 1]);
    EXPECT_NEAR(ys[k - 1] - ys[k], ys[0] - ys[1], 0.02);
  }
  // One x tick per layer; the readout's is labelled.
  std::vector<std::string> x_labels;
  for (const Element* e : FindAll(*panels[0], "text", "x-tick-label")) x_labels.push_back(e->text);
  EXPECT_EQ(x_labels, (std::vector<std::string>{"1", "2", "3", "readout"}));
}

TEST(SvgTest, EscapesEveryText) {
  const std::string title = "job <a&b> \"x\" 'y'";
  Chart chart = CollapseChart(Reports(1), title, "train <evil>&");
  chart.panels[0].series[0].name = "in<put>";
  const std::string svg = RenderSvg(chart);
  EXPECT_FALSE(absl::StrContains(svg, "<a&b>"));
  EXPECT_FALSE(absl::StrContains(svg, "<evil>"));
  const Element root = ParseSvg(svg);
  EXPECT_EQ(FindAll(root, "text", "title").front()->text, title);
  EXPECT_EQ(FindAll(root, "title").front()->text, title);
  EXPECT_EQ(FindAll(root, "text", "subtitle").front()->text, "train <evil>&");
  EXPECT_EQ(FindAll(root, "text", "legend-label").front()->text, "in<put>");
}

TEST(SvgTest, LeavesOutValuesALogAxisCannotShow) {
  std::vector<v1::LayerReport> reports = Reports(2);
  reports[0].mutable_input()->set_nc1(0);
  reports[1].mutable_input()->set_nc1(std::nan(""));
  const Element root = ParseSvg(RenderSvg(CollapseChart(reports, "t", "")));
  for (const Element* s : FindAll(root, "polyline", "series")) {
    if (absl::EndsWith(s->attributes.at("data-series"),
                       "nc1 = tr(\u03A3_W) / tr(\u03A3_B): input")) {
      const std::vector<std::string> coords =
          absl::StrSplit(s->attributes.at("points"), ' ', absl::SkipEmpty());
      EXPECT_EQ(coords.size(), 1u);  // only the readout's
    }
  }
}

TEST(SvgTest, WithoutReportsSaysSoAndStaysWellFormed) {
  const Element root = ParseSvg(RenderSvg(CollapseChart({}, "empty", "")));
  EXPECT_EQ(FindAll(root, "polyline", "series").size(), 0u);
  EXPECT_EQ(FindAll(root, "text", "no-data").size(), 2u);
}

// A measurement of an MLP with `depth` hidden layers at `epoch`: nc1 of none = 2 / layer /
// (1 + epoch), right half of it, left 0.8 of it (none for the output layer); NFA 0.5 + 0.01 epoch.
v1::NetworkReport NetworkReport(int depth, int epoch) {
  v1::NetworkReport r;
  r.set_epoch(epoch);
  r.set_train_loss(0.5 / (1 + epoch));
  r.set_train_accuracy(0.75);
  r.set_test_accuracy(0.7);
  r.set_test_loss(0.6);
  r.set_seconds(1.5);
  for (int l = 1; l <= depth + 1; ++l) {
    v1::NetworkLayerReport* layer = r.add_layers();
    layer->set_layer(l);
    layer->set_output(l == depth + 1);
    const double none = 2.0 / l / (1 + epoch);
    layer->mutable_none()->set_nc1(none);
    layer->mutable_right()->set_nc1(none / 2);
    if (!layer->output()) layer->mutable_left()->set_nc1(none * 0.8);
    layer->set_nfa_correlation(0.5 + 0.01 * epoch);
    layer->set_nfa_correlation_raw(-0.25);
    layer->add_top_singular_values(12.5);
    layer->add_top_singular_values(3);
  }
  return r;
}

TEST(NetworkTableTest, LayerRowsLineUpAndTheOutputLayerHasNoLeft) {
  const std::string table = NetworkLayerTable(NetworkReport(2, 10), "  ");
  const std::vector<std::string> lines = absl::StrSplit(table, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "  layer    nc1_none nc1_right  nc1_left     nfa nfa_raw  sigma_1");
  EXPECT_EQ(lines[1], "  1          0.1818    0.0909    0.1455  0.6000 -0.2500  12.5000");
  EXPECT_EQ(lines[3], "  3 out      0.0606    0.0303         -  0.6000 -0.2500  12.5000");
  for (const std::string& line : lines) EXPECT_EQ(line.size(), lines[0].size()) << line;
  EXPECT_EQ(FormatCorrelation(std::nan("")), "-");
}

TEST(NetworkTableTest, ABlockIsASummaryLineAndTheLayerTable) {
  v1::NetworkReport r = NetworkReport(1, 0);
  EXPECT_TRUE(absl::StartsWith(
      NetworkReportBlock(r, false),
      "epoch 0: train loss 0.5000 accuracy 0.7500  test loss 0.6000 accuracy 0.7000  (1.5s)\n"
      "  layer "));
  r.clear_test_loss();
  EXPECT_TRUE(absl::StartsWith(NetworkReportBlock(r, false),
                               "epoch 0: train loss 0.5000 accuracy 0.7500  test accuracy 0.7000  "
                               "(1.5s)\n"));
  r.clear_test_accuracy();
  EXPECT_TRUE(absl::StartsWith(NetworkReportBlock(r, false),
                               "epoch 0: train loss 0.5000 accuracy 0.7500  (1.5s)\n"));
  EXPECT_TRUE(absl::StartsWith(NetworkReportBlock(r, true),
                               "measured: loss 0.5000  accuracy 0.7500  (1.5s)\n"));
  EXPECT_EQ(NetworkTableHeader(), "epoch   train_loss  test_loss   train    test     sec\n");
  const std::string row = NetworkTableRow(NetworkReport(1, 20));
  EXPECT_EQ(row, "20          0.0238     0.6000  0.7500  0.7000    1.50\n");
  EXPECT_EQ(row.size(), NetworkTableHeader().size());
  r = NetworkReport(1, 20);
  r.clear_test_loss();
  r.clear_test_accuracy();
  EXPECT_EQ(NetworkTableRow(r), "20          0.0238          -  0.7500       -    1.50\n");
}

// The events of an MLP job of depth 1 trained for 20 epochs, measured at 0, 10 and 20.
std::vector<v1::JobEvent> MlpEvents() {
  std::vector<v1::JobEvent> events;
  auto add = [&](v1::JobEvent e) {
    e.set_sequence(static_cast<int64_t>(events.size()) + 1);
    e.mutable_time()->set_seconds(1000 + e.sequence());
    events.push_back(e);
  };
  v1::JobEvent e;
  e.mutable_state_change()->set_state(v1::Job::QUEUED);
  add(e);
  e.mutable_state_change()->set_state(v1::Job::RUNNING);
  add(e);
  for (int epoch : {0, 10, 20}) {
    if (epoch > 0) {
      for (int done : {epoch - 10, epoch - 9, epoch - 1}) {
        v1::JobEvent p;
        p.mutable_progress()->set_phase(v1::Progress::TRAIN);
        p.mutable_progress()->set_epoch(done);
        p.mutable_progress()->set_fraction(0.5);
        add(p);
      }
    }
    for (int layer : {1, 2}) {
      v1::JobEvent p;
      p.mutable_progress()->set_phase(v1::Progress::MEASURE);
      p.mutable_progress()->set_layer(layer);
      p.mutable_progress()->set_epoch(epoch);
      p.mutable_progress()->set_fraction(0.25);
      add(p);
    }
    v1::JobEvent report;
    *report.mutable_network_report() = NetworkReport(1, epoch);
    add(report);
  }
  v1::JobEvent done;
  done.mutable_state_change()->set_state(v1::Job::SUCCEEDED);
  add(done);
  return events;
}

v1::Job MlpJob() {
  v1::Job job;
  job.set_kind(v1::Job::MLP);
  job.set_layers_total(3);
  job.mutable_mlp_config()->set_epochs(20);
  job.mutable_mlp_config()->set_depth(1);
  return job;
}

TEST(JobDisplayTest, AnMlpPrintsALinePerStretchOfTrainingAndABlockPerMeasurement) {
  std::ostringstream out;
  JobDisplay display(out, /*interactive=*/false, "mlp1");
  display.SetJob(MlpJob());
  for (const v1::JobEvent& e : MlpEvents()) display.OnEvent(e, absl::FromUnixSeconds(2000));
  display.Finish();
  const std::string text = out.str();
  EXPECT_EQ(text.find('\r'), std::string::npos);
  std::vector<std::string> progress;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, "[")) progress.emplace_back(line.substr(11));
  }
  // One line when training or a measurement starts, not one per epoch or per layer.
  EXPECT_EQ(progress, (std::vector<std::string>{"measuring at epoch 0", "training, epoch 0 of 20",
                                                "measuring at epoch 10", "training, epoch 10 of 20",
                                                "measuring at epoch 20"}));
  EXPECT_TRUE(absl::StrContains(
      text,
      "epoch 10: train loss 0.0455 accuracy 0.7500  test loss 0.6000 accuracy 0.7000  (1.5s)\n"
      "  layer    nc1_none"))
      << text;
  ASSERT_EQ(display.network_reports().size(), 3u);
  EXPECT_EQ(display.network_reports()[2].epoch(), 20);
  EXPECT_TRUE(display.reports().empty());
}

TEST(JobDisplayTest, AnMlpStatusLineShowsTheEpochOrTheLayerMeasured) {
  std::ostringstream out;
  JobDisplay display(out, /*interactive=*/true, "mlp1");
  display.SetJob(MlpJob());
  const std::vector<v1::JobEvent> events = MlpEvents();
  // Up to the TRAIN progress at epoch 9.
  size_t i = 0;
  for (; i < events.size(); ++i) {
    display.OnEvent(events[i], absl::FromUnixSeconds(1000));
    if (events[i].has_progress() && events[i].progress().epoch() == 9) break;
  }
  std::string text = out.str();
  std::string status = text.substr(text.rfind("\r\033[K") + 4);
  EXPECT_TRUE(absl::StartsWith(status, "epoch 9/20 [")) << status;
  EXPECT_TRUE(absl::StrContains(status, "train")) << status;
  // Then the measurement of layer 2 at epoch 10.
  for (++i; i < events.size(); ++i) {
    display.OnEvent(events[i], absl::FromUnixSeconds(1000));
    if (events[i].has_progress() && events[i].progress().layer() == 2) break;
  }
  text = out.str();
  status = text.substr(text.rfind("\r\033[K") + 4);
  EXPECT_TRUE(absl::StartsWith(status, "measuring layer 2/2 [")) << status;
  EXPECT_TRUE(absl::StrContains(status, "measure   25%")) << status;
}

TEST(TicksTest, LinearTicksAreNiceAndCoverTheRange) {
  const std::vector<double> ticks = LinearTicks(0.12, 0.97);
  const std::vector<double> expected = {0, 0.2, 0.4, 0.6, 0.8, 1};
  ASSERT_EQ(ticks.size(), expected.size());
  for (size_t i = 0; i < ticks.size(); ++i) EXPECT_NEAR(ticks[i], expected[i], 1e-12);
  const std::vector<double> negative = LinearTicks(-0.3, 0.95);
  EXPECT_LE(negative.front(), -0.3);
  EXPECT_GE(negative.back(), 0.95);
  EXPECT_LE(negative.size(), 6u);
  // A constant is widened into a range around it.
  const std::vector<double> flat = LinearTicks(0.9, 0.9);
  EXPECT_GE(flat.size(), 2u);
  EXPECT_LT(flat.front(), 0.9);
  EXPECT_GT(flat.back(), 0.9);
}

TEST(TicksTest, IntegerTicksUseANiceStep) {
  EXPECT_EQ(IntegerTicks(1, 4), (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(IntegerTicks(0, 250), (std::vector<int>{0, 50, 100, 150, 200, 250}));
  EXPECT_EQ(IntegerTicks(0, 25), (std::vector<int>{0, 5, 10, 15, 20, 25}));
  EXPECT_EQ(IntegerTicks(1, 65), (std::vector<int>{10, 20, 30, 40, 50, 60}));
  EXPECT_EQ(IntegerTicks(7, 7), (std::vector<int>{7}));
}

TEST(SvgTest, NetworkChartHasAPanelPerLayerAndOneForTheNfa) {
  std::vector<v1::NetworkReport> reports;
  for (int epoch : {0, 10, 20, 30}) reports.push_back(NetworkReport(3, epoch));
  const Element root = ParseSvg(RenderSvg(NetworkChart(reports, "MLP", "depth 3")));
  const std::vector<const Element*> panels = FindAll(root, "g", "panel");
  ASSERT_EQ(panels.size(), 5u);
  std::vector<std::string> titles;
  for (const Element* p : panels) titles.push_back(FindAll(*p, "text", "panel-title")[0]->text);
  EXPECT_EQ(titles, (std::vector<std::string>{"layer 1", "layer 2", "layer 3", "layer 4 (output)",
                                              "NFA: corr(W^T W, AGOP^1/2)"}));
  // Per layer: none, right and left, a point per epoch; the output layer has no left.
  for (size_t p = 0; p < 4; ++p) {
    const std::vector<const Element*> series = FindAll(*panels[p], "polyline", "series");
    ASSERT_EQ(series.size(), p == 3 ? 2u : 3u) << titles[p];
    for (const Element* s : series) {
      const std::vector<std::string> coords =
          absl::StrSplit(s->attributes.at("points"), ' ', absl::SkipEmpty());
      EXPECT_EQ(coords.size(), 4u);
    }
    EXPECT_EQ(series[0]->attributes.at("data-series"), titles[p] + ": none (input)");
    std::vector<std::string> x_labels;
    for (const Element* e : FindAll(*panels[p], "text", "x-tick-label"))
      x_labels.push_back(e->text);
    EXPECT_EQ(x_labels, (std::vector<std::string>{"0", "5", "10", "15", "20", "25", "30"}));
  }
  // The NFA panel: a curve per layer on a linear axis, each labelled at its end.
  const std::vector<const Element*> nfa = FindAll(*panels[4], "polyline", "series");
  ASSERT_EQ(nfa.size(), 4u);
  std::vector<std::string> end_labels;
  for (const Element* e : FindAll(*panels[4], "text", "end-label")) end_labels.push_back(e->text);
  EXPECT_EQ(end_labels, (std::vector<std::string>{"layer 1", "layer 2", "layer 3", "output"}));
  // The four curves end at the same value: their labels are pushed apart, inside the plot.
  std::vector<double> label_ys;
  for (const Element* e : FindAll(*panels[4], "text", "end-label")) {
    double y;
    ASSERT_TRUE(absl::SimpleAtod(e->attributes.at("y"), &y));
    label_ys.push_back(y);
  }
  double plot_top, plot_height;
  const Element* area = FindAll(*panels[4], "rect", "plot-area")[0];
  ASSERT_TRUE(absl::SimpleAtod(area->attributes.at("y"), &plot_top));
  ASSERT_TRUE(absl::SimpleAtod(area->attributes.at("height"), &plot_height));
  for (size_t k = 1; k < label_ys.size(); ++k) EXPECT_GE(label_ys[k] - label_ys[k - 1], 11.99);
  EXPECT_LE(label_ys.back(), plot_top + plot_height + 0.01);
  std::vector<std::string> y_labels;
  for (const Element* e : FindAll(*panels[4], "text", "y-tick-label")) y_labels.push_back(e->text);
  ASSERT_GE(y_labels.size(), 2u);
  double lo, hi;
  ASSERT_TRUE(absl::SimpleAtod(y_labels.front(), &lo));
  ASSERT_TRUE(absl::SimpleAtod(y_labels.back(), &hi));
  EXPECT_LE(lo, 0.5);
  EXPECT_GE(hi, 0.8);
  EXPECT_LT(hi - lo, 1);  // scaled to the data, not to [-1, 1]
  // The legend: the three representations only.
  std::vector<std::string> legend;
  for (const Element* e : FindAll(root, "text", "legend-label")) legend.push_back(e->text);
  EXPECT_EQ(legend, (std::vector<std::string>{"none (input)", "right (W h)", "left (ReLU(W h))"}));
}

TEST(SvgTest, PanelsWrapIntoRowsOfThree) {
  std::vector<v1::NetworkReport> reports = {NetworkReport(3, 0), NetworkReport(3, 10)};
  const Element root = ParseSvg(RenderSvg(NetworkChart(reports, "t", "")));
  std::vector<std::pair<double, double>> corners;
  for (const Element* r : FindAll(root, "rect", "plot-area")) {
    double x, y;
    ASSERT_TRUE(absl::SimpleAtod(r->attributes.at("x"), &x));
    ASSERT_TRUE(absl::SimpleAtod(r->attributes.at("y"), &y));
    corners.emplace_back(x, y);
  }
  ASSERT_EQ(corners.size(), 5u);
  EXPECT_EQ(corners[0].second, corners[2].second);  // first row
  EXPECT_GT(corners[3].second, corners[0].second);  // second row
  EXPECT_EQ(corners[3].first, corners[0].first);    // same column as the first
  EXPECT_EQ(corners[4].second, corners[3].second);
  double height, bottom;
  ASSERT_TRUE(absl::SimpleAtod(root.attributes.at("height"), &height));
  ASSERT_TRUE(
      absl::SimpleAtod(FindAll(root, "rect", "plot-area")[3]->attributes.at("height"), &bottom));
  EXPECT_GT(height, corners[3].second + bottom);  // the second row fits in the document
}

TEST(SvgTest, ASingleMeasurementIsShownAcrossLayers) {
  const Element root = ParseSvg(RenderSvg(NetworkChart({NetworkReport(2, 0)}, "analysis", "")));
  const std::vector<const Element*> panels = FindAll(root, "g", "panel");
  ASSERT_EQ(panels.size(), 2u);
  std::vector<std::string> x_labels;
  for (const Element* e : FindAll(*panels[0], "text", "x-tick-label")) x_labels.push_back(e->text);
  EXPECT_EQ(x_labels, (std::vector<std::string>{"1", "2", "output"}));
  std::map<std::string, size_t> points;
  for (const Element* s : FindAll(root, "polyline", "series")) {
    points[s->attributes.at("data-series")] =
        std::vector<std::string>(absl::StrSplit(s->attributes.at("points"), ' ', absl::SkipEmpty()))
            .size();
  }
  EXPECT_EQ(points["nc1 by layer: none (input)"], 3u);
  EXPECT_EQ(points["nc1 by layer: left (ReLU(W h))"], 2u);
  EXPECT_EQ(points["NFA correlation by layer: nfa: W^T W vs AGOP^1/2"], 3u);
  EXPECT_EQ(points["NFA correlation by layer: nfa_raw: W^T W vs AGOP"], 3u);  // negative: linear
  // Legend entries are as wide as their labels: no label runs into the next entry.
  const std::vector<const Element*> labels = FindAll(root, "text", "legend-label");
  ASSERT_EQ(labels.size(), 5u);
  for (size_t k = 1; k < labels.size(); ++k) {
    double previous, next;
    ASSERT_TRUE(absl::SimpleAtod(labels[k - 1]->attributes.at("x"), &previous));
    ASSERT_TRUE(absl::SimpleAtod(labels[k]->attributes.at("x"), &next));
    EXPECT_GT(next - previous, 7.0 * static_cast<double>(DisplayWidth(labels[k - 1]->text)))
        << labels[k - 1]->text;
  }
  // No measurement yet: two empty panels.
  const Element empty = ParseSvg(RenderSvg(NetworkChart({}, "t", "")));
  EXPECT_EQ(FindAll(empty, "text", "no-data").size(), 2u);
}

TEST(SvgTest, TheXmlCheckerRejectsBrokenDocuments) {
  auto well_formed = [](std::string_view text) {
    Element root;
    std::string error;
    return XmlParser(text).Parse(&root, &error);
  };
  EXPECT_FALSE(well_formed("<a><b></a>"));
  EXPECT_FALSE(well_formed("<a>x & y</a>"));
  EXPECT_FALSE(well_formed("<a>x < y</a>"));
  EXPECT_FALSE(well_formed("<a t=\"1\" t=\"2\"/>"));
  EXPECT_FALSE(well_formed("<a t=1/>"));
  EXPECT_FALSE(well_formed("<a>&nbsp;</a>"));
  EXPECT_FALSE(well_formed("<a/><b/>"));
  EXPECT_FALSE(well_formed("<a>"));
  EXPECT_TRUE(well_formed("<?xml version=\"1.0\"?>\n<a t='&lt;'>&#955;<!-- c --><b/></a>\n"));
}

}  // namespace
}  // namespace drfm::client
