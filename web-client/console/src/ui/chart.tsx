// A small live line chart (uPlot): one series over time, resized with its box.

import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";

interface Props {
  title: string;
  unit?: string;
  /** Seconds since the epoch. */
  times: number[];
  values: Array<number | null>;
  /** The latest value, shown beside the title. */
  latest?: string;
}

export function Chart({ title, unit, times, values, latest }: Props) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);

  useEffect(() => {
    const element = box.current;
    if (!element) return undefined;
    const style = getComputedStyle(document.documentElement);
    const stroke = style.getPropertyValue("--accent").trim() || "#2563eb";
    const grid = style.getPropertyValue("--grid").trim() || "#8884";
    const ink = style.getPropertyValue("--muted").trim() || "#888";
    const axis = { stroke: ink, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    plot.current = new uPlot(
      {
        width: Math.max(200, element.clientWidth),
        height: 140,
        legend: { show: false },
        cursor: { show: true, drag: { x: false, y: false } },
        scales: { x: { time: true }, y: { range: (_u, min, max) => [Math.min(0, min), Math.max(1, max * 1.1)] } },
        axes: [axis, { ...axis, size: 44 }],
        series: [{}, { label: title, stroke, width: 2, fill: `${stroke}22`, points: { show: false } }],
      },
      [times, values],
      element,
    );
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: Math.max(200, element.clientWidth), height: 140 }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
    // A theme change re-creates the chart with the new colours.
  }, [document.documentElement.dataset.theme]);

  useEffect(() => {
    plot.current?.setData([times, values]);
  }, [times, values]);

  return (
    <figure
      class="chart"
      aria-label={`${title}${latest ? `: ${latest}` : ""}`}
      data-points={times.length}
      data-breaks={values.filter((v) => v === null).length}
    >
      <figcaption>
        <span>{title}</span>
        <b data-figure={title}>
          {latest ?? "–"}
          {latest && unit ? ` ${unit}` : ""}
        </b>
      </figcaption>
      <div ref={box} class="chart-box" />
    </figure>
  );
}
