// Predefined function `nodejs-calculator`: arithmetic over a list of numbers.
// Its schema promises a number: a result that overflows is an error, not null.
function finite(value) {
  if (!Number.isFinite(value)) throw new Error("the result is out of the range of a number");
  return { value };
}

module.exports = async (event) => {
  const { operation, values } = event.params;
  const [first, ...rest] = values;
  switch (operation) {
    case "add":
      return finite(values.reduce((acc, v) => acc + v, 0));
    case "subtract":
      return finite(rest.reduce((acc, v) => acc - v, first));
    case "multiply":
      return finite(values.reduce((acc, v) => acc * v, 1));
    case "divide":
      return finite(
        rest.reduce((acc, v) => {
          if (v === 0) throw new Error("division by zero");
          return acc / v;
        }, first),
      );
    default:
      throw new Error(`unsupported operation: ${operation}`);
  }
};
